//! Who the load generator acts as: the seeded demo accounts, with access tokens minted by the
//! node's own key.
//!
//! `seed-demo` registers `courier{n}@…`, `customer{n}@…` and `vendor{n}@…`; their user ids are
//! assigned at registration, so they are looked up once through the admin API (as an admin
//! whose token this tool mints). Store and product ids, by contrast, are derived from the seed's
//! numbering ([`demo_uuid`]).

use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::api::Api;
use hexmarket::config::Settings;
use hexmarket::domain::identity::Role;
use hexmarket::domain::ids::UserId;
use hexmarket::identity::tokens::AccessTokens;
use hexmarket::secrets::Secrets;
use hexmarket::seed::DEMO_DOMAIN;

/// Issues access tokens exactly as the node does (same key, same claims).
pub struct Minter {
    tokens: AccessTokens,
}

impl Minter {
    /// The node's signing key: `HEXMARKET_JWT_SECRET`, or the one derived from the master
    /// secret (see `app::build_identity`).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let secrets = Secrets::load(settings)?;
        let key = match &settings.jwt_secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => secrets.derive("jwt-hs256").to_vec(),
        };
        Ok(Minter {
            tokens: AccessTokens::new(&key),
        })
    }

    /// A fresh ten-minute access token, as if `user` had just signed in.
    pub fn mint(&self, user: UserId, role: Role) -> anyhow::Result<String> {
        let now = Utc::now();
        self.tokens.issue(user, role, now, None, now)
    }

    /// An admin token for a synthetic admin (tokens are checked by signature only); used to
    /// list the demo accounts.
    pub fn admin(&self) -> anyhow::Result<String> {
        use hexmarket::identity::tokens::{AMR_MFA, AMR_OTP, AMR_PWD};
        // Administrators act only with a second factor, so the minted token claims one.
        let now = Utc::now();
        self.tokens.issue_with(
            UserId::new(),
            Role::Admin,
            now,
            &[AMR_PWD, AMR_OTP, AMR_MFA],
            None,
            now,
        )
    }
}

/// The ids of `courier0..courier{count-1}` (or customers, vendors), by number.
pub async fn demo_users(
    api: &Api,
    minter: &Minter,
    role: Role,
    count: usize,
) -> anyhow::Result<Vec<UserId>> {
    let prefix = role.as_str();
    let token = minter.admin()?;
    let mut found: Vec<Option<UserId>> = vec![None; count];
    let mut cursor: Option<String> = None;
    loop {
        let mut path =
            format!("/api/v1/admin/users?role={prefix}&email=%40{DEMO_DOMAIN}&limit=100");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = api.get(&path, Some(&token)).await?;
        for user in page["users"].as_array().into_iter().flatten() {
            let Some(n) = demo_number(user, prefix) else {
                continue;
            };
            if n < count {
                found[n] = user["id"].as_str().and_then(|s| s.parse().ok());
            }
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || found.iter().all(Option::is_some) {
            break;
        }
    }
    let have = found.iter().filter(|u| u.is_some()).count();
    anyhow::ensure!(
        have == count,
        "only {have} of {count} demo {prefix} accounts ({prefix}0..{prefix}{}) exist: run \
         `hexmarket seed-demo --{prefix}s {count}` (server stopped on the embedded store)",
        count.saturating_sub(1)
    );
    Ok(found.into_iter().flatten().collect())
}

/// `n` of `{prefix}{n}@demo-domain`.
fn demo_number(user: &Value, prefix: &str) -> Option<usize> {
    let email = user["email"].as_str()?;
    let local = email.strip_suffix(&format!("@{DEMO_DOMAIN}"))?;
    local.strip_prefix(prefix)?.parse().ok()
}

/// Percent-encodes a query value (cursors are opaque strings).
pub fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The id `seed-demo` gives the `n`th thing of a kind (`vendor`, `product`): the same derivation
/// as `seed::demo_uuid`, which is private to the seed. [`live`](super::live) checks it against
/// the node's vendor list before relying on it.
pub fn demo_uuid(kind: &str, n: usize) -> Uuid {
    let mut bytes =
        *hexmarket::domain::ids::derived_uuid(&format!("hexmarket-demo:{kind}:{n}")).as_bytes();
    // 48-bit timestamp: 2026-01-01 plus n milliseconds, so the seed's ids sort by n.
    let ms: u64 = 1_767_225_600_000 + n as u64;
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_ids_follow_the_seed_derivation() {
        // The seed's rule (seed.rs `demo_uuid`): SHA-256 of "hexmarket-demo:{kind}:{n}" shaped
        // as a v7 UUID, its first 48 bits replaced by 2026-01-01T00:00:00Z + n ms.
        let id = demo_uuid("vendor", 7);
        let derived = hexmarket::domain::ids::derived_uuid("hexmarket-demo:vendor:7");
        assert_eq!(id.as_bytes()[6..], derived.as_bytes()[6..]);
        assert_eq!(id.get_version_num(), 7);
        let (secs, _) = id.get_timestamp().map(|t| t.to_unix()).unwrap_or_default();
        assert_eq!(secs, 1_767_225_600);
        assert!(demo_uuid("vendor", 1) < demo_uuid("vendor", 2));
        assert_ne!(demo_uuid("vendor", 1), demo_uuid("product", 1));
    }

    #[test]
    fn demo_numbers_come_from_the_email() {
        let user = serde_json::json!({"email": format!("courier42@{DEMO_DOMAIN}")});
        assert_eq!(demo_number(&user, "courier"), Some(42));
        assert_eq!(demo_number(&user, "customer"), None);
    }

    #[test]
    fn cursors_are_percent_encoded() {
        assert_eq!(encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }
}
