//! The client's address: the TCP peer, or, when the peer is a proxy the operator trusts
//! (`HEXMARKET_TRUSTED_PROXIES`), the address that proxy reports in `X-Forwarded-For` or
//! `Forwarded: for=` (RFC 7239; `HEXMARKET_FORWARDED_HEADER` says which).
//!
//! Every use of the client's address (the per-address login limit, request logs) goes
//! through [`client_address`], so a forged header can never count for one and not the other.
//!
//! # Why walk from the right, and why one header
//!
//! Each proxy appends the address it received the request from, so the list reads
//! `client, proxy1, proxy2` and only its right end is written by proxies we trust; anything to
//! the left of the first untrusted entry may be made up by the client. So the list is walked
//! from the right, skipping hops that are themselves trusted proxies, and the first untrusted
//! one is the client. A hop that cannot be read (`unknown`, an obfuscated name, garbage) ends
//! the walk at the proxy that reported it.
//!
//! Only the header the proxies are configured to write is read. A proxy that appends to
//! `X-Forwarded-For` usually passes a `Forwarded` header from the client through untouched
//! (and the reverse), so reading whichever is present would let any client choose its address.

use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};

use actix_web::dev::Payload;
use actix_web::http::header::HeaderMap;
use actix_web::{FromRequest, HttpRequest, web};

use crate::config::{ClientAddressSettings, ForwardedHeader};

/// The client's address as far as it can be known; shown as `unknown` when not at all (a
/// request without a socket peer, in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

impl FromRequest for ClientAddr {
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(client_address(req)))
    }
}

/// The client's address of `req`, under the node's trusted proxies (app data
/// `web::Data<ClientAddressSettings>`; without it nobody is trusted).
pub fn client_address(req: &HttpRequest) -> ClientAddr {
    let peer = req.peer_addr().map(|a| a.ip());
    match req.app_data::<web::Data<ClientAddressSettings>>() {
        Some(settings) => ClientAddr(resolve(peer, req.headers(), settings)),
        None => ClientAddr(peer.map(|ip| ip.to_canonical())),
    }
}

/// The client's address given the socket peer and the request's headers.
pub fn resolve(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    settings: &ClientAddressSettings,
) -> Option<IpAddr> {
    let mut current = peer?.to_canonical();
    if !is_trusted(settings, current) {
        return Some(current);
    }
    let hops = match settings.header {
        ForwardedHeader::XForwardedFor => list(headers, "x-forwarded-for", xff_hop),
        ForwardedHeader::Forwarded => list(headers, "forwarded", forwarded_hop),
    };
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) => current = ip.to_canonical(),
            None => break,
        }
        if !is_trusted(settings, current) {
            break;
        }
    }
    Some(current)
}

fn is_trusted(settings: &ClientAddressSettings, ip: IpAddr) -> bool {
    settings.trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// Every comma-separated element of every `name` header, in order, read by `hop`. A header
/// that is not visible ASCII yields one unreadable hop.
fn list(headers: &HeaderMap, name: &str, hop: fn(&str) -> Option<IpAddr>) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        match value.to_str() {
            Ok(value) => hops.extend(value.split(',').map(|element| hop(element.trim()))),
            Err(_) => hops.push(None),
        }
    }
    hops
}

/// One `X-Forwarded-For` element: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`).
fn xff_hop(element: &str) -> Option<IpAddr> {
    node_address(element)
}

/// One `Forwarded` element's `for=` parameter (`for=192.0.2.60;proto=https`,
/// `For="[2001:db8:cafe::17]:4711"`).
fn forwarded_hop(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        node_address(value)
    })
}

/// An IP address, optionally bracketed (IPv6) and followed by a port.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    node.strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .and_then(|v| v.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;
    use crate::config::parse_trusted_proxies;

    fn settings(trusted: &str, header: ForwardedHeader) -> ClientAddressSettings {
        ClientAddressSettings {
            trusted_proxies: parse_trusted_proxies(trusted).unwrap(),
            header,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let s = settings("", ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(resolve(ip("203.0.113.9"), &h, &s), ip("203.0.113.9"));
        let s = settings("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        assert_eq!(resolve(ip("203.0.113.9"), &h, &s), ip("203.0.113.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let s = settings("10.0.0.0/8, 192.0.2.1", ForwardedHeader::XForwardedFor);
        // The client forged the first entry; the proxies appended the rest.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.0.2.1")]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &s), ip("198.51.100.7"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:5000"),
        ]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &s), ip("198.51.100.7"));
        // Nothing forwarded: the proxy itself.
        assert_eq!(
            resolve(ip("10.1.2.3"), &HeaderMap::new(), &s),
            ip("10.1.2.3")
        );
        // An unreadable hop stops the walk at the proxy that reported it.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, garbage")]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &s), ip("10.1.2.3"));
        // Every hop trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 192.0.2.1")]);
        assert_eq!(resolve(ip("10.1.2.3"), &h, &s), ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_for_is_read_with_quotes_ports_and_ipv6() {
        let s = settings("2001:db8:ffff::/48, 10.0.0.1", ForwardedHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.1;by=x",
        )]);
        assert_eq!(
            resolve(ip("2001:db8:ffff::1"), &h, &s),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &s), ip("10.0.0.1"));
        // The other header is not read at all.
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &s), ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_proxies() {
        let s = settings("127.0.0.1", ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(resolve(ip("::ffff:127.0.0.1"), &h, &s), ip("198.51.100.7"));
    }
}
