//! Vendor stores: one per vendor user, created, edited and suspended.

use serde::Deserialize;

use super::{Catalog, CatalogError, directory::VENDOR_TOPIC};
use crate::domain::catalog::{
    MAX_ADDRESS, MAX_DESCRIPTION, MAX_NAME, OpeningHours, Vendor, VendorStatus,
    check_delivery_radius, check_line, check_text,
};
use crate::domain::geo::GeoPoint;
use crate::domain::ids::{UserId, VendorId};
use crate::error_code::ErrorCode;
use crate::store::catalog::id_key;
use crate::store::typed::Change;

/// A new store.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVendor {
    #[schema(
        max_length = 120,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(
        max_length = 5000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: String,
    #[schema(
        max_length = 300,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub pickup_address: String,
    pub location: GeoPoint,
    #[serde(default)]
    pub opening_hours: OpeningHours,
    /// How far the store delivers, in km (more than 0, at most 50).
    #[schema(exclusive_minimum = 0, maximum = 50)]
    pub delivery_radius_km: f64,
}

/// Changes to a store; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VendorPatch {
    #[schema(
        max_length = 120,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(
        max_length = 5000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: Option<String>,
    #[schema(
        max_length = 300,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub pickup_address: Option<String>,
    pub location: Option<GeoPoint>,
    pub opening_hours: Option<OpeningHours>,
    #[schema(exclusive_minimum = 0, maximum = 50)]
    pub delivery_radius_km: Option<f64>,
    /// `active`, `paused` or `closed`; only admins set or lift `suspended`.
    pub status: Option<VendorStatus>,
}

fn invalid(field: &str) -> impl Fn(String) -> CatalogError + '_ {
    move |message| CatalogError::invalid(field, message)
}

impl VendorPatch {
    /// Applies the patch to `vendor`, validating every field it sets.
    fn apply(&self, vendor: &mut Vendor, by_admin: bool) -> Result<(), CatalogError> {
        if let Some(name) = &self.name {
            vendor.name = check_line("name", name, MAX_NAME).map_err(invalid("name"))?;
        }
        if let Some(description) = &self.description {
            vendor.description = check_text("description", description, MAX_DESCRIPTION)
                .map_err(invalid("description"))?;
        }
        if let Some(address) = &self.pickup_address {
            vendor.pickup_address = check_line("pickup_address", address, MAX_ADDRESS)
                .map_err(invalid("pickup_address"))?;
        }
        if let Some(location) = self.location {
            vendor.location = location;
            vendor.cell = location.cell().to_string();
        }
        if let Some(hours) = &self.opening_hours {
            hours.validate().map_err(invalid("opening_hours"))?;
            vendor.opening_hours = hours.clone();
        }
        if let Some(km) = self.delivery_radius_km {
            vendor.delivery_radius_km =
                check_delivery_radius(km).map_err(invalid("delivery_radius_km"))?;
        }
        if let Some(status) = self.status {
            let touches_suspension =
                status == VendorStatus::Suspended || vendor.status == VendorStatus::Suspended;
            if touches_suspension && status != vendor.status && !by_admin {
                return Err(CatalogError::Forbidden(
                    "only an admin can suspend a store or lift a suspension",
                ));
            }
            vendor.status = status;
        }
        Ok(())
    }
}

impl Catalog {
    /// Opens the caller's store. A vendor runs at most one (409 `vendor_exists`).
    pub async fn create_vendor(
        &self,
        owner: UserId,
        new: NewVendor,
    ) -> Result<Vendor, CatalogError> {
        let now = self.clock.now();
        let mut vendor = Vendor {
            id: VendorId::new(),
            owner,
            name: String::new(),
            description: String::new(),
            pickup_address: String::new(),
            location: new.location,
            cell: new.location.cell().to_string(),
            opening_hours: OpeningHours::default(),
            delivery_radius_km: 1.0,
            status: VendorStatus::Active,
            created_at: now,
            updated_at: now,
        };
        VendorPatch {
            name: Some(new.name),
            description: Some(new.description),
            pickup_address: Some(new.pickup_address),
            location: None,
            opening_hours: Some(new.opening_hours),
            delivery_radius_km: Some(new.delivery_radius_km),
            status: None,
        }
        .apply(&mut vendor, false)?;

        // Claim the owner's single store first. A claim left behind by a crash before the
        // store row was written is completed with the claimed id.
        match self.repo.owners.insert(&id_key(owner), &vendor.id).await? {
            Ok(_) => {}
            Err(Some(claimed)) => {
                if self.repo.vendor(claimed.value).await?.is_some() {
                    return Err(CatalogError::Conflict {
                        code: ErrorCode::VendorExists,
                        detail: "you already run a store; change it with PATCH".to_owned(),
                    });
                }
                vendor.id = claimed.value;
            }
            Err(None) => {
                return Err(CatalogError::Internal(anyhow::anyhow!(
                    "owner claim vanished"
                )));
            }
        }
        if let Err(Some(_)) = self
            .repo
            .vendors
            .insert(&id_key(vendor.id), &vendor)
            .await?
        {
            return Err(CatalogError::Conflict {
                code: ErrorCode::VendorExists,
                detail: "you already run a store; change it with PATCH".to_owned(),
            });
        }
        self.vendor_changed(&vendor).await;
        Ok(vendor)
    }

    /// Changes a store (its owner or an admin).
    pub async fn update_vendor(
        &self,
        id: VendorId,
        caller: UserId,
        by_admin: bool,
        patch: VendorPatch,
    ) -> Result<Vendor, CatalogError> {
        let now = self.clock.now();
        let (vendor, _) = self
            .repo
            .vendors
            .modify(&id_key(id), |current| {
                let mut vendor = current.cloned().ok_or(CatalogError::NotFound)?;
                if vendor.owner != caller && !by_admin {
                    return Err(CatalogError::NotFound);
                }
                patch.apply(&mut vendor, by_admin)?;
                vendor.updated_at = now;
                Ok(Change::Put(vendor.clone(), vendor))
            })
            .await?;
        self.vendor_changed(&vendor).await;
        if patch.name.is_some() || patch.status.is_some() {
            let reindexed = self.indexer.refresh_vendor(vendor.id).await;
            if let Err(e) = reindexed {
                tracing::warn!(error = ?e, vendor_id = %vendor.id, "vendor's products not re-indexed");
            }
            self.invalidate_lists().await;
        }
        Ok(vendor)
    }

    /// The store `caller` runs, if any.
    pub async fn vendor_of(&self, caller: UserId) -> Result<Option<Vendor>, CatalogError> {
        match self.repo.vendor_of(caller).await? {
            Some(id) => Ok(self.repo.vendor(id).await?.map(|v| v.value)),
            None => Ok(None),
        }
    }

    /// Tells the directory here and on every other node that a vendor changed.
    async fn vendor_changed(&self, vendor: &Vendor) {
        self.directory.upsert(vendor.clone());
        // Its products' pages show the store (and vanish with it).
        self.views.forget_all();
        let payload = bytes::Bytes::from(vendor.id.to_string());
        if let Err(e) = self.bus.publish(VENDOR_TOPIC, payload).await {
            tracing::warn!(error = %e, "vendor change not announced to other nodes");
        }
    }

    /// Re-reads a vendor into the directory (a change announced by another node).
    pub async fn reload_vendor(&self, id: VendorId) -> Result<(), CatalogError> {
        self.views.forget_all();
        match self.repo.vendor(id).await? {
            Some(v) => self.directory.upsert(v.value),
            None => self.directory.remove(id),
        }
        Ok(())
    }

    /// Loads every vendor into the directory.
    pub async fn load_directory(&self) -> Result<usize, CatalogError> {
        let mut count = 0;
        self.repo
            .vendors
            .for_each(|_, vendor| {
                self.directory.upsert(vendor.value);
                count += 1;
            })
            .await?;
        Ok(count)
    }
}
