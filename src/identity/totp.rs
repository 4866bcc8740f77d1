//! RFC 6238 time-based one-time passwords (HMAC-SHA1, 30-second steps, six digits) as
//! authenticator apps compute them, the `otpauth://` URI that enrols an app, and the sealing
//! of the secret at rest.
//!
//! The secret is sealed rather than hashed because checking a code needs the secret itself.
//! Sealing uses HMAC-SHA256 twice, with two keys derived from the master secret: once as a
//! pseudo-random function giving a keystream for a random nonce and the account id (the
//! 20-byte secret is XORed with it), once as a MAC over nonce and ciphertext
//! (encrypt-then-MAC). The account id is bound into both, so a sealed secret copied onto
//! another account's row does not open. Whoever reads the users table or a logged row learns
//! nothing without the master secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use data_encoding::BASE32_NOPAD;
use sha1::{Digest as _, Sha1};

use super::tokens::constant_time_eq;
use crate::domain::ids::UserId;
use crate::secrets::hmac_sha256;

/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps either side of the current one whose codes are still accepted (clock drift, typing).
pub const SKEW_STEPS: u64 = 1;
/// Bytes of a secret: 160 bits, the HMAC-SHA1 output size RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;
/// The issuer authenticator apps show.
pub const ISSUER: &str = "hexmarket";

const NONCE_BYTES: usize = 16;
const TAG_BYTES: usize = 16;

/// A TOTP secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret([u8; SECRET_BYTES]);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    pub fn generate() -> Self {
        TotpSecret(rand::random())
    }

    /// The secret in RFC 4648 base32 without padding, as authenticator apps take it.
    pub fn base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// Parses base32 (case-insensitive, padding and spaces ignored).
    pub fn from_base32(text: &str) -> Option<Self> {
        let clean: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '='))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = BASE32_NOPAD.decode(clean.as_bytes()).ok()?;
        Some(TotpSecret(bytes.try_into().ok()?))
    }

    /// The code for time step `step`.
    pub fn code_at(&self, step: u64) -> String {
        hotp(&self.0, step)
    }

    /// The step of the code among `step - SKEW_STEPS ..= step + SKEW_STEPS` that equals `code`
    /// and is newer than `last_used`, if any.
    pub fn accepts(&self, code: &str, step: u64, last_used: u64) -> Option<u64> {
        let mut found = None;
        // Every candidate is computed and compared, so timing does not tell which matched.
        for candidate in step.saturating_sub(SKEW_STEPS)..=step.saturating_add(SKEW_STEPS) {
            if constant_time_eq(&self.code_at(candidate), code) && candidate > last_used {
                found = Some(candidate);
            }
        }
        found
    }

    /// `otpauth://totp/hexmarket:<account>?secret=…&issuer=hexmarket&…`, the URI an
    /// authenticator app enrols from (usually shown as a QR code).
    pub fn otpauth_uri(&self, account: &str) -> String {
        format!(
            "otpauth://totp/{ISSUER}:{}?secret={}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            percent_encode(account),
            self.base32()
        )
    }
}

/// The time step of a Unix time in seconds.
pub fn step_of(unix_secs: i64) -> u64 {
    u64::try_from(unix_secs.div_euclid(STEP_SECS)).unwrap_or(0)
}

/// RFC 4226 HOTP with HMAC-SHA1, truncated to [`DIGITS`] digits.
fn hotp(secret: &[u8], counter: u64) -> String {
    let mac = hmac_sha1(secret, &counter.to_be_bytes());
    let offset = usize::from(mac[19] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    format!(
        "{:0width$}",
        binary % 10u32.pow(DIGITS as u32),
        width = DIGITS
    )
}

/// HMAC (RFC 2104) over SHA-1. The `hmac` crate this project uses is built for an older
/// generation of the digest traits than the `sha1` crate in the dependency tree, and HMAC is
/// two hashes.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..20].copy_from_slice(Sha1::digest(key).as_slice());
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha1::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.as_slice());
    let mut out = [0u8; 20];
    out.copy_from_slice(outer.finalize().as_slice());
    out
}

/// Percent-encodes everything but unreserved characters and `@` (an email stays readable).
fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes()
        .fold(String::with_capacity(text.len()), |mut s, b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                s.push(char::from(b));
            } else {
                let _ = write!(s, "%{b:02X}");
            }
            s
        })
}

/// Seals and opens TOTP secrets for storage.
#[derive(Clone)]
pub struct Sealer {
    stream_key: [u8; 32],
    mac_key: [u8; 32],
}

impl Sealer {
    /// Both keys are derived from `key` (itself derived from the master secret).
    pub fn new(key: &[u8; 32]) -> Self {
        Sealer {
            stream_key: hmac_sha256(key, b"totp-seal-stream"),
            mac_key: hmac_sha256(key, b"totp-seal-mac"),
        }
    }

    /// `base64url(nonce ‖ ciphertext ‖ tag)`.
    pub fn seal(&self, user: UserId, secret: &TotpSecret) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let stream = self.keystream(user, &nonce);
        let mut sealed = Vec::with_capacity(NONCE_BYTES + SECRET_BYTES + TAG_BYTES);
        sealed.extend_from_slice(&nonce);
        sealed.extend(secret.0.iter().zip(stream).map(|(s, k)| s ^ k));
        let tag = self.tag(user, &sealed);
        sealed.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// The secret, or `None` when the sealed text was altered, belongs to another account or
    /// was sealed under another master secret.
    pub fn open(&self, user: UserId, sealed: &str) -> Option<TotpSecret> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() != NONCE_BYTES + SECRET_BYTES + TAG_BYTES {
            return None;
        }
        let (body, tag) = bytes.split_at(NONCE_BYTES + SECRET_BYTES);
        let expected = self.tag(user, body);
        let same = expected[..TAG_BYTES]
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !same {
            return None;
        }
        let (nonce, cipher) = body.split_at(NONCE_BYTES);
        let stream = self.keystream(user, nonce);
        let mut secret = [0u8; SECRET_BYTES];
        for (out, (c, k)) in secret.iter_mut().zip(cipher.iter().zip(stream)) {
            *out = c ^ k;
        }
        Some(TotpSecret(secret))
    }

    fn keystream(&self, user: UserId, nonce: &[u8]) -> [u8; 32] {
        let mut message = user.as_uuid().as_bytes().to_vec();
        message.extend_from_slice(nonce);
        hmac_sha256(&self.stream_key, &message)
    }

    fn tag(&self, user: UserId, body: &[u8]) -> [u8; 32] {
        let mut message = user.as_uuid().as_bytes().to_vec();
        message.extend_from_slice(body);
        hmac_sha256(&self.mac_key, &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows, last six of the eight digits.
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = TotpSecret(*b"12345678901234567890");
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(secret.code_at(step_of(time)), code, "at {time}");
        }
    }

    /// RFC 2202 test case 6: a key longer than the block is hashed first.
    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        let mac = hmac_sha1(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            super::super::tokens::hex(&mac),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn one_step_of_skew_is_accepted_and_used_steps_are_not() {
        let secret = TotpSecret::generate();
        let now = 1_000_000;
        assert_eq!(
            secret.accepts(&secret.code_at(now - 1), now, 0),
            Some(now - 1)
        );
        assert_eq!(
            secret.accepts(&secret.code_at(now + 1), now, 0),
            Some(now + 1)
        );
        assert_eq!(secret.accepts(&secret.code_at(now - 2), now, 0), None);
        assert_eq!(secret.accepts(&secret.code_at(now), now, now), None);
        assert_eq!(
            secret.accepts(&secret.code_at(now + 1), now, now),
            Some(now + 1)
        );
    }

    #[test]
    fn the_uri_carries_the_base32_secret_and_issuer() {
        let secret = TotpSecret(*b"12345678901234567890");
        assert_eq!(secret.base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            TotpSecret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq"),
            Some(secret.clone())
        );
        assert_eq!(
            secret.otpauth_uri("a+b@example.com"),
            "otpauth://totp/hexmarket:a%2Bb@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=hexmarket&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_account_and_key() {
        let sealer = Sealer::new(&[3; 32]);
        let secret = TotpSecret::generate();
        let user = UserId::new();
        let sealed = sealer.seal(user, &secret);
        assert!(!sealed.contains(&secret.base32()));
        assert_eq!(sealer.open(user, &sealed), Some(secret));
        assert_eq!(sealer.open(UserId::new(), &sealed), None);
        assert_eq!(Sealer::new(&[4; 32]).open(user, &sealed), None);
        let mut tampered = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        tampered[20] ^= 1;
        assert_eq!(sealer.open(user, &URL_SAFE_NO_PAD.encode(tampered)), None);
    }
}
