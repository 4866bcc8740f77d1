//! The master secret and the keys derived from it.
//!
//! One master secret per deployment; each use (cart tokens, later JWTs) gets its own key
//! derived with HMAC-SHA256, so a key leaked from one use says nothing about another. The
//! embedded default generates the master secret on first start and keeps it in the data
//! directory; nodes sharing a ScyllaDB cluster must all be given the same one.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Settings;

type HmacSha256 = Hmac<Sha256>;

const SECRET_FILE: &str = "secret.key";

/// The deployment's master secret.
#[derive(Clone)]
pub struct Secrets {
    master: Vec<u8>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// The configured secret, or (embedded store only) the one kept in the data directory.
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(key) = &settings.secret_key {
            return Ok(Secrets {
                master: key.as_bytes().to_vec(),
            });
        }
        anyhow::ensure!(
            settings.scylla.is_none(),
            "HEXMARKET_SECRET_KEY: must be set when the store is ScyllaDB (every node needs the same one)"
        );
        Self::load_or_create(&settings.data_dir.join(SECRET_FILE))
    }

    fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let master = URL_SAFE_NO_PAD
                    .decode(text.trim())
                    .with_context(|| format!("{} is not a valid secret file", path.display()))?;
                anyhow::ensure!(
                    master.len() >= 32,
                    "{} holds a secret shorter than 32 bytes",
                    path.display()
                );
                Ok(Secrets { master })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let master: [u8; 32] = rand::random();
                write_private(path, URL_SAFE_NO_PAD.encode(master).as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(path = %path.display(), "generated a new master secret");
                Ok(Secrets {
                    master: master.to_vec(),
                })
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// A signer whose key is derived for `purpose`.
    pub fn signer(&self, purpose: &str) -> Signer {
        Signer {
            key: self.derive(purpose),
        }
    }

    /// A 32-byte key for `purpose`.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(&self.master, purpose.as_bytes())
    }
}

/// Signs short strings into tamper-evident tokens `payload.signature`.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// `payload` must not contain `.`.
    pub fn sign(&self, payload: &str) -> String {
        let tag = hmac_sha256(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..16]))
    }

    /// The payload of a token this signer made, or `None` when it was altered or forged.
    pub fn verify<'t>(&self, token: &'t str) -> Option<&'t str> {
        let (payload, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(payload.as_bytes());
        // verify_truncated_left compares in constant time.
        mac.verify_truncated_left(&tag).ok()?;
        (tag.len() == 16).then_some(payload)
    }
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_and_a_tampered_one_does_not() {
        let secrets = Secrets {
            master: vec![7; 32],
        };
        let signer = secrets.signer("cart");
        let token = signer.sign("abc");
        assert_eq!(signer.verify(&token), Some("abc"));
        assert_eq!(signer.verify(&token.replacen("abc", "abd", 1)), None);
        assert_eq!(secrets.signer("other").verify(&token), None);
        assert_eq!(signer.verify("abc"), None);
        assert_eq!(signer.verify("abc."), None);
    }

    #[test]
    fn the_generated_secret_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        let first = Secrets::load_or_create(&path).unwrap();
        let second = Secrets::load_or_create(&path).unwrap();
        assert_eq!(first.derive("x"), second.derive("x"));
    }
}
