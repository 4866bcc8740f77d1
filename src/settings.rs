//! The platform's live settings: read by every part that uses one (checkout, orders,
//! dispatch, couriers, the ledger, support) from a view kept current on each node, changed by
//! administrators, and in force on every node within a second of a change.
//!
//! A change is kept in the store first (a new version, by compare-and-set), then announced on
//! the bus; every node's follower reloads on the announcement, and also reads the version in
//! force every [`POLL`] in case an announcement was lost (the bus is best effort), so a node
//! that missed the message still catches up within a second. The environment gives the first
//! version, at the platform's very first start; after that it is only the store's.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

use crate::bus::{Delivery, SharedBus};
use crate::clock::Clock;
use crate::domain::ids::UserId;
use crate::domain::settings::{PlatformSettings, SettingRefused, SettingsPatch, SettingsVersion};
use crate::store::settings::{ChangeError, SettingsRepo};
use crate::store::{SharedStore, StoreError, StoreResult};

/// The bus topic a change is announced on (its payload: the new version number).
pub const TOPIC: &str = "platform.settings";

/// How often each node reads the version in force, whatever the bus says.
pub const POLL: Duration = Duration::from_millis(500);

/// The settings in force on this node, cheap to read and to clone.
#[derive(Clone)]
pub struct SettingsView {
    current: Arc<RwLock<SettingsVersion>>,
}

impl SettingsView {
    /// A view that holds `settings` until a book replaces them (tests and tools).
    pub fn fixed(settings: PlatformSettings) -> Self {
        SettingsView {
            current: Arc::new(RwLock::new(SettingsVersion {
                version: 0,
                settings,
                changed_at: chrono::DateTime::UNIX_EPOCH,
                changed_by: None,
            })),
        }
    }

    /// The settings in force.
    pub fn get(&self) -> PlatformSettings {
        match self.current.read() {
            Ok(current) => current.settings,
            Err(poisoned) => poisoned.into_inner().settings,
        }
    }

    /// The version in force, with who made it and when.
    pub fn version(&self) -> SettingsVersion {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Takes `version` unless the view holds a newer one already.
    fn offer(&self, version: SettingsVersion) -> bool {
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if version.version > current.version {
            *current = version;
            true
        } else {
            false
        }
    }
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Invalid(#[from] SettingRefused),
    /// The change named a version that is no longer the one in force.
    #[error("the settings are at version {current}, not {expected}")]
    Stale { expected: u64, current: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The settings: the view this node reads and the way to change them.
#[derive(Clone)]
pub struct SettingsBook {
    repo: SettingsRepo,
    bus: SharedBus,
    clock: Clock,
    view: SettingsView,
}

impl SettingsBook {
    /// Loads the version in force, keeping `defaults` (from the environment) as version 1 when
    /// there is none yet.
    pub async fn open(
        store: SharedStore,
        bus: SharedBus,
        clock: Clock,
        defaults: PlatformSettings,
    ) -> StoreResult<SettingsBook> {
        let repo = SettingsRepo::new(store);
        let current = match repo.current().await? {
            Some(current) => current,
            None => {
                repo.initialise(SettingsVersion {
                    version: 1,
                    settings: defaults,
                    changed_at: clock.now(),
                    changed_by: None,
                })
                .await?
            }
        };
        let view = SettingsView {
            current: Arc::new(RwLock::new(current)),
        };
        Ok(SettingsBook {
            repo,
            bus,
            clock,
            view,
        })
    }

    pub fn view(&self) -> &SettingsView {
        &self.view
    }

    /// Applies `patch` by `admin`: checked, kept as a new version, in force here at once and
    /// announced to the other nodes. Returns the version replaced and the new one.
    pub async fn change(
        &self,
        patch: &SettingsPatch,
        admin: UserId,
    ) -> Result<(SettingsVersion, SettingsVersion), SettingsError> {
        let now = self.clock.now();
        let (before, after) = self
            .repo
            .change(|current| {
                if let Some(expected) = patch.version
                    && expected != current.version
                {
                    return Err(SettingsError::Stale {
                        expected,
                        current: current.version,
                    });
                }
                Ok(SettingsVersion {
                    version: current.version + 1,
                    settings: current.settings.patched(patch)?,
                    changed_at: now,
                    changed_by: Some(admin),
                })
            })
            .await
            .map_err(|e| match e {
                ChangeError::Refused(e) => e,
                ChangeError::Store(e) => SettingsError::Store(e),
            })?;
        self.view.offer(after.clone());
        let announced = Bytes::from(after.version.to_string());
        if let Err(e) = self.bus.publish(TOPIC, announced).await {
            // The other nodes' polls take the change instead.
            tracing::warn!(error = %e, "settings change not announced on the bus");
        }
        tracing::info!(version = after.version, admin = %admin, "platform settings changed");
        Ok((before, after))
    }

    /// Versions kept, newest first (see [`SettingsRepo::history`]).
    pub async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<(Vec<SettingsVersion>, Option<u64>)> {
        self.repo.history(before, limit).await
    }

    /// Reads the version in force into the view; whether it was new.
    pub async fn refresh(&self) -> StoreResult<bool> {
        Ok(match self.repo.current().await? {
            Some(current) => self.view.offer(current),
            None => false,
        })
    }

    /// Follows changes made on any node until the book is dropped: on each announcement, and
    /// every [`POLL`].
    pub fn follow(
        book: impl Fn() -> Option<SettingsBook> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut subscription = match book() {
                Some(b) => b.bus.subscribe(TOPIC).await.ok(),
                None => return,
            };
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let announced = async {
                    match subscription.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    delivery = announced => {
                        if delivery.is_none() {
                            subscription = None;
                        }
                        if let Some(Delivery::Message(payload)) = &delivery {
                            let known = book().map(|b| b.view.version().version);
                            let told = std::str::from_utf8(payload).ok().and_then(|s| s.parse::<u64>().ok());
                            if told.is_some() && told <= known {
                                continue;
                            }
                        }
                    }
                    _ = tick.tick() => {}
                }
                let Some(book) = book() else { return };
                match book.refresh().await {
                    Ok(true) => tracing::info!(
                        version = book.view.version().version,
                        "platform settings now in force"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "platform settings not refreshed"),
                }
            }
        })
    }
}
