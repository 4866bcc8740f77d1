//! Products: created, changed and deleted by the vendor who sells them (or an admin), read by
//! everyone while published by an active vendor.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::views::View;

use super::indexing::Wait;
use super::{Catalog, CatalogError};
use crate::domain::catalog::{
    Attributes, MAX_DESCRIPTION, MAX_TITLE, Product, Vendor, VendorStatus, Visibility,
    check_attributes, check_line, check_text,
};
use crate::domain::geo::GeoPoint;
use crate::domain::ids::{CategoryId, ProductId, UserId, VendorId};
use crate::domain::money::Money;
use crate::domain::review::{RatingSummary, ReviewTarget};
use crate::store::catalog::id_key;
use crate::store::typed::Change;

/// A new product. It starts as a draft unless `visibility` says otherwise.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub title: String,
    #[serde(default)]
    #[schema(
        max_length = 5000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: String,
    #[schema(value_type = String, format = Uuid)]
    pub category_id: CategoryId,
    /// Unit price: more than zero, at most one million major units.
    pub price: Money,
    #[serde(default)]
    pub attributes: Attributes,
    pub visibility: Option<Visibility>,
}

/// Changes to a product; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub title: Option<String>,
    #[schema(
        max_length = 5000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: Option<String>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub category_id: Option<CategoryId>,
    pub price: Option<Money>,
    /// Replaces all attributes.
    pub attributes: Option<Attributes>,
    pub visibility: Option<Visibility>,
}

/// The store a product comes from, as shown with the product.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VendorSummary {
    #[schema(value_type = String, format = Uuid)]
    pub id: VendorId,
    pub name: String,
    pub location: GeoPoint,
    pub status: VendorStatus,
    pub delivery_radius_km: f64,
}

impl From<&Vendor> for VendorSummary {
    fn from(v: &Vendor) -> Self {
        VendorSummary {
            id: v.id,
            name: v.name.clone(),
            location: v.location,
            status: v.status,
            delivery_radius_km: v.delivery_radius_km,
        }
    }
}

/// A product as clients see it: with its store, stock and rating.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProductView {
    #[serde(flatten)]
    pub product: Product,
    pub vendor: VendorSummary,
    /// Units that can be bought now.
    pub available: u32,
    pub rating: RatingSummary,
}

fn check_price(price: Money) -> Result<Money, CatalogError> {
    Money::unit_price(price.amount_minor, price.currency)
        .map_err(|m| CatalogError::invalid("price.amount_minor", m))
}

impl ProductPatch {
    fn apply(&self, product: &mut Product) -> Result<(), CatalogError> {
        if let Some(title) = &self.title {
            product.title = check_line("title", title, MAX_TITLE)
                .map_err(|m| CatalogError::invalid("title", m))?;
        }
        if let Some(description) = &self.description {
            product.description = check_text("description", description, MAX_DESCRIPTION)
                .map_err(|m| CatalogError::invalid("description", m))?;
        }
        if let Some(category) = self.category_id {
            product.category_id = category;
        }
        if let Some(price) = self.price {
            product.price = check_price(price)?;
        }
        if let Some(attributes) = &self.attributes {
            check_attributes(attributes).map_err(|m| CatalogError::invalid("attributes", m))?;
            product.attributes = attributes.clone();
        }
        if let Some(visibility) = self.visibility {
            product.visibility = visibility;
        }
        Ok(())
    }
}

impl Catalog {
    /// Lists a new product in the caller's store.
    pub async fn create_product(
        &self,
        caller: UserId,
        new: NewProduct,
    ) -> Result<Product, CatalogError> {
        let vendor = self
            .vendor_of(caller)
            .await?
            .ok_or(CatalogError::Forbidden(
                "open a store (POST /api/v1/vendors) before listing products",
            ))?;
        self.check_category(new.category_id).await?;
        let now = self.clock.now();
        let mut product = Product {
            id: ProductId::new(),
            vendor_id: vendor.id,
            title: String::new(),
            description: String::new(),
            category_id: new.category_id,
            price: check_price(new.price)?,
            attributes: Attributes::new(),
            visibility: new.visibility.unwrap_or(Visibility::Draft),
            images: Vec::new(),
            created_at: now,
            updated_at: now,
            hidden: false,
        };
        ProductPatch {
            title: Some(new.title),
            description: Some(new.description),
            attributes: Some(new.attributes),
            ..ProductPatch::default()
        }
        .apply(&mut product)?;
        if let Err(Some(_)) = self
            .repo
            .products
            .insert(&id_key(product.id), &product)
            .await?
        {
            return Err(CatalogError::Internal(anyhow::anyhow!(
                "product id collision"
            )));
        }
        self.product_changed(product.id).await;
        Ok(product)
    }

    async fn check_category(&self, id: CategoryId) -> Result<(), CatalogError> {
        let tree = self.repo.category_tree().await?.value;
        if tree.get(id).is_some() {
            Ok(())
        } else {
            Err(CatalogError::invalid("category_id", "no such category"))
        }
    }

    /// The product and its store, if `caller` may change it (its vendor or an admin);
    /// anyone else gets 404, as if it did not exist.
    pub async fn product_for_owner(
        &self,
        id: ProductId,
        caller: UserId,
        by_admin: bool,
    ) -> Result<(Product, Vendor), CatalogError> {
        let product = self
            .repo
            .product(id)
            .await?
            .ok_or(CatalogError::NotFound)?
            .value;
        let vendor = self
            .repo
            .vendor(product.vendor_id)
            .await?
            .ok_or(CatalogError::NotFound)?
            .value;
        if vendor.owner == caller || by_admin {
            Ok((product, vendor))
        } else {
            Err(CatalogError::NotFound)
        }
    }

    pub async fn update_product(
        &self,
        id: ProductId,
        caller: UserId,
        by_admin: bool,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        self.product_for_owner(id, caller, by_admin).await?;
        if let Some(category) = patch.category_id {
            self.check_category(category).await?;
        }
        let now = self.clock.now();
        let (product, _) = self
            .repo
            .products
            .modify(&id_key(id), |current| {
                let mut product = current.cloned().ok_or(CatalogError::NotFound)?;
                patch.apply(&mut product)?;
                product.updated_at = now;
                Ok(Change::Put(product.clone(), product))
            })
            .await?;
        self.product_changed(id).await;
        Ok(product)
    }

    pub async fn delete_product(
        &self,
        id: ProductId,
        caller: UserId,
        by_admin: bool,
    ) -> Result<(), CatalogError> {
        self.product_for_owner(id, caller, by_admin).await?;
        self.repo
            .products
            .modify(&id_key(id), |current| match current {
                Some(_) => Ok::<_, CatalogError>(Change::Delete(())),
                None => Err(CatalogError::NotFound),
            })
            .await?;
        self.product_changed(id).await;
        Ok(())
    }

    /// Re-indexes a changed product (searchable when this returns) and drops cached lists.
    pub async fn product_changed(&self, id: ProductId) {
        self.views.forget(&[id]);
        if let Err(e) = self.indexer.refresh(&[id], Wait::Visible).await {
            tracing::warn!(error = ?e, product_id = %id, "product not re-indexed");
        }
        self.invalidate_lists().await;
    }

    /// A product and its store (from the directory when it has it).
    async fn product_and_store(&self, id: ProductId) -> Result<(Product, Vendor), CatalogError> {
        let product = self
            .repo
            .product(id)
            .await?
            .ok_or(CatalogError::NotFound)?
            .value;
        let vendor = match self.directory.get(product.vendor_id) {
            Some(v) => v,
            None => {
                self.repo
                    .vendor(product.vendor_id)
                    .await?
                    .ok_or(CatalogError::NotFound)?
                    .value
            }
        };
        Ok((product, vendor))
    }

    /// A product and its store as a purchase sees them: published products of active stores
    /// only, without the stock and rating a page shows (a checkout holds the stock itself).
    pub async fn listed_product(
        &self,
        id: ProductId,
    ) -> Result<(Product, VendorSummary), CatalogError> {
        let (product, vendor) = self.product_and_store(id).await?;
        if !product.is_listed(vendor.is_active()) {
            return Err(CatalogError::NotFound);
        }
        Ok((product, VendorSummary::from(&vendor)))
    }

    /// A product as `viewer` may see it: everyone sees published products of active stores;
    /// the store's owner and admins see every product of the store.
    pub async fn product_view(
        &self,
        id: ProductId,
        viewer: Option<(UserId, bool)>,
    ) -> Result<ProductView, CatalogError> {
        let (product, vendor) = self.product_and_store(id).await?;
        let privileged = viewer.is_some_and(|(user, admin)| admin || user == vendor.owner);
        let listed = product.is_listed(vendor.is_active());
        if !privileged && !listed {
            return Err(CatalogError::NotFound);
        }
        let (available, rating) = self.stock_and_rating(id).await?;
        Ok(ProductView {
            product,
            vendor: VendorSummary::from(&vendor),
            available,
            rating,
        })
    }

    /// The product page as JSON for `viewer`: the public page from the short-lived cache when
    /// the viewer is not privileged, a fresh render otherwise.
    pub async fn product_page(
        &self,
        id: ProductId,
        viewer: Option<(UserId, bool)>,
    ) -> Result<Bytes, CatalogError> {
        let privileged = |owner: UserId| viewer.is_some_and(|(user, admin)| admin || user == owner);
        if let Some(view) = self.views.get(id)
            && !privileged(view.owner)
        {
            return view.public.ok_or(CatalogError::NotFound);
        }
        let rendered = self.render_page(id).await?;
        let owner = rendered.owner;
        self.views.put(id, rendered.clone());
        match rendered.public {
            Some(public) if !privileged(owner) => Ok(public),
            None if !privileged(owner) => Err(CatalogError::NotFound),
            _ => {
                let view = self.product_view(id, viewer).await?;
                Ok(Bytes::from(
                    serde_json::to_vec(&view).map_err(|e| CatalogError::Internal(e.into()))?,
                ))
            }
        }
    }

    /// Renders the public page of a product (absent when it is not listed).
    async fn render_page(&self, id: ProductId) -> Result<View, CatalogError> {
        let (product, vendor) = self.product_and_store(id).await?;
        let owner = vendor.owner;
        if !product.is_listed(vendor.is_active()) {
            return Ok(View {
                owner,
                public: None,
            });
        }
        let (available, rating) = self.stock_and_rating(id).await?;
        let view = ProductView {
            product,
            vendor: VendorSummary::from(&vendor),
            available,
            rating,
        };
        let json = serde_json::to_vec(&view).map_err(|e| CatalogError::Internal(e.into()))?;
        Ok(View {
            owner,
            public: Some(Bytes::from(json)),
        })
    }

    /// Units available now and the rating of a product.
    pub async fn stock_and_rating(
        &self,
        id: ProductId,
    ) -> Result<(u32, RatingSummary), CatalogError> {
        let (stock, rating) = tokio::join!(
            self.inventory.get(id),
            self.reviews.rating(ReviewTarget::Product(id)),
        );
        let rating = rating.map_err(|e| match e {
            crate::catalog::reviews::ReviewError::Store(e) => CatalogError::Store(e),
            other => CatalogError::Internal(anyhow::anyhow!(other)),
        })?;
        Ok((stock?.available, rating))
    }
}
