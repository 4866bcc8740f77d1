//! Where `verify-store` runs the contract: a store of the configured backend that cannot touch
//! live data, removed afterwards. For the embedded store, a directory of its own inside
//! `HEXMARKET_DATA_DIR` (on the disk the live store uses, which is what is being checked); for
//! ScyllaDB, a keyspace of its own, `<keyspace>_verify_<random>`, created with the configured
//! replication factor and migrated like the live one.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{ScyllaSettings, Settings};
use crate::store::SharedStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::migrate::{self, SCRATCH_MARK};
use crate::store::scylla::ScyllaStore;

/// Longest keyspace name ScyllaDB accepts.
const MAX_KEYSPACE_NAME: usize = 48;
/// Hex digits of randomness in a scratch keyspace's name.
const RANDOM_DIGITS: usize = 12;

/// A store opened in a scratch place. [`Scratch::remove`] deletes the place; a scratch
/// directory dropped without it is removed anyway, a keyspace is left (and logged).
pub struct Scratch {
    // Dropped before `place`: the store is closed before its directory goes.
    store: SharedStore,
    place: Place,
}

/// The scratch directory or keyspace, removed at most once.
struct Place {
    at: At,
    removed: bool,
}

enum At {
    Directory(PathBuf),
    Keyspace {
        settings: ScyllaSettings,
        migrated: Vec<String>,
    },
}

impl Scratch {
    /// Opens the backend `settings` configure in a new scratch place, with the schema applied.
    pub async fn open(settings: &Settings) -> anyhow::Result<Scratch> {
        match &settings.scylla {
            Some(scylla) => Self::keyspace(scylla).await,
            None => Self::directory(settings).await,
        }
    }

    async fn directory(settings: &Settings) -> anyhow::Result<Scratch> {
        let dir = settings
            .data_dir
            .join(format!("verify-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the scratch directory {}", dir.display()))?;
        // From here on the directory is removed on drop, also when opening fails.
        let place = Place {
            at: At::Directory(dir.clone()),
            removed: false,
        };
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir)).await??;
        Ok(Scratch {
            store: Arc::new(store),
            place,
        })
    }

    async fn keyspace(scylla: &ScyllaSettings) -> anyhow::Result<Scratch> {
        let mut settings = scylla.clone();
        settings.keyspace = scratch_keyspace(&scylla.keyspace);
        let mut place = Place {
            at: At::Keyspace {
                settings: settings.clone(),
                migrated: Vec::new(),
            },
            removed: false,
        };
        let opened = async {
            let migrated = migrate::run(&settings).await?;
            let store = ScyllaStore::connect(&settings).await?;
            anyhow::Ok((migrated, store))
        }
        .await;
        match opened {
            Ok((applied, store)) => {
                if let At::Keyspace { migrated, .. } = &mut place.at {
                    *migrated = applied;
                }
                Ok(Scratch {
                    store: Arc::new(store),
                    place,
                })
            }
            Err(e) => {
                // A half-made keyspace is dropped too.
                if let Err(dropping) = place.remove().await {
                    tracing::warn!(
                        keyspace = %settings.keyspace,
                        error = format!("{dropping:#}"),
                        "could not drop the scratch keyspace; drop it by hand if it was made"
                    );
                }
                Err(e)
            }
        }
    }

    /// The scratch store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Which backend, where, and what was migrated, for the operator.
    pub fn describe(&self) -> String {
        match &self.place.at {
            At::Directory(dir) => format!(
                "embedded store in the scratch directory {} (its tables are made on open)",
                dir.display()
            ),
            At::Keyspace { settings, migrated } => format!(
                "ScyllaDB at {} in the scratch keyspace {} (replication factor {}; {} schema \
                 files applied: {})",
                settings.nodes.join(","),
                settings.keyspace,
                settings.replication_factor,
                migrated.len(),
                migrated.join(", "),
            ),
        }
    }

    /// Closes the store, then deletes the scratch directory or drops the scratch keyspace.
    pub async fn remove(self) -> anyhow::Result<()> {
        let Scratch { store, mut place } = self;
        drop(store);
        place.remove().await
    }
}

impl Place {
    async fn remove(&mut self) -> anyhow::Result<()> {
        self.removed = true;
        match &self.at {
            At::Directory(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("removing {}", dir.display()))
                })
                .await?
            }
            At::Keyspace { settings, .. } => migrate::drop_scratch_keyspace(settings).await,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        match &self.at {
            At::Directory(dir) => {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "scratch directory left");
                }
            }
            At::Keyspace { settings, .. } => {
                tracing::warn!(keyspace = %settings.keyspace, "scratch keyspace left; drop it by hand");
            }
        }
    }
}

/// `<keyspace>_verify_<random>`, the keyspace shortened so the whole fits ScyllaDB's limit.
fn scratch_keyspace(keyspace: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let random = &random[..RANDOM_DIGITS];
    let room = MAX_KEYSPACE_NAME - SCRATCH_MARK.len() - RANDOM_DIGITS;
    // Keyspace names are ASCII letters, digits and underscores, so any cut is on a character.
    let base: String = keyspace.chars().take(room).collect();
    format!("{base}{SCRATCH_MARK}{random}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_keyspaces_are_marked_random_and_fit_the_name_limit() {
        let short = scratch_keyspace("hexmarket");
        assert!(short.starts_with("hexmarket_verify_"), "{short}");
        assert_eq!(short.len(), "hexmarket_verify_".len() + RANDOM_DIGITS);
        assert_ne!(short, scratch_keyspace("hexmarket"));

        let long = scratch_keyspace(&"k".repeat(60));
        assert_eq!(long.len(), MAX_KEYSPACE_NAME);
        assert!(long.contains(SCRATCH_MARK));
    }
}
