//! The category tree: admin changes by compare-and-set of the one tree row, and the public
//! tree with product counts from the search index.

use std::collections::HashMap;

use serde::Serialize;

use super::{Catalog, CatalogError};
use crate::domain::catalog::{Category, CategoryError, CategoryTree};
use crate::domain::ids::CategoryId;
use crate::error_code::ErrorCode;
use crate::store::Key;
use crate::store::catalog::CATEGORY_TREE;
use crate::store::typed::Change;

/// A category with its subcategories and how many products it holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CategoryNode {
    #[schema(value_type = String, format = Uuid)]
    pub id: CategoryId,
    pub name: String,
    /// Products listed in this category or below it.
    pub product_count: u64,
    #[schema(no_recursion)]
    pub children: Vec<CategoryNode>,
}

impl From<CategoryError> for CatalogError {
    fn from(e: CategoryError) -> Self {
        match e {
            CategoryError::NotFound => CatalogError::NotFound,
            CategoryError::ParentNotFound => CatalogError::invalid("parent_id", e.to_string()),
            CategoryError::Invalid(message) => CatalogError::invalid("name", message),
            CategoryError::Cycle => CatalogError::Conflict {
                code: ErrorCode::CategoryCycle,
                detail: e.to_string(),
            },
            CategoryError::TooDeep => CatalogError::Conflict {
                code: ErrorCode::CategoryTooDeep,
                detail: e.to_string(),
            },
            CategoryError::DuplicateName => CatalogError::Conflict {
                code: ErrorCode::CategoryNameTaken,
                detail: e.to_string(),
            },
            CategoryError::HasChildren => CatalogError::Conflict {
                code: ErrorCode::CategoryNotEmpty,
                detail: e.to_string(),
            },
            CategoryError::TooMany => CatalogError::Conflict {
                code: ErrorCode::TooManyCategories,
                detail: e.to_string(),
            },
        }
    }
}

fn build_nodes(
    tree: &CategoryTree,
    parent: Option<CategoryId>,
    own_counts: &HashMap<CategoryId, u64>,
) -> Vec<CategoryNode> {
    let mut nodes: Vec<CategoryNode> = tree
        .categories
        .iter()
        .filter(|c| c.parent == parent)
        .map(|c| {
            let children = build_nodes(tree, Some(c.id), own_counts);
            let below: u64 = children.iter().map(|n| n.product_count).sum();
            CategoryNode {
                id: c.id,
                name: c.name.clone(),
                product_count: own_counts.get(&c.id).copied().unwrap_or(0) + below,
                children,
            }
        })
        .collect();
    nodes.sort_by_key(|n| n.name.to_lowercase());
    nodes
}

impl Catalog {
    /// The whole tree, top-level categories first, each with its listed products counted.
    pub async fn category_nodes(&self) -> Result<Vec<CategoryNode>, CatalogError> {
        let tree = self.repo.category_tree().await?.value;
        let counts = self.indexer.search.count_by_category(true).await?;
        Ok(build_nodes(&tree, None, &counts))
    }

    /// Runs one change of the tree by compare-and-set.
    async fn change_tree<R>(
        &self,
        change: impl Fn(&mut CategoryTree) -> Result<R, CategoryError>,
    ) -> Result<R, CatalogError> {
        let (out, _) = self
            .repo
            .categories
            .modify(&Key::single(CATEGORY_TREE), |current| {
                let mut tree = current.cloned().unwrap_or_default();
                let out = change(&mut tree).map_err(CatalogError::from)?;
                Ok(Change::Put(tree, out))
            })
            .await?;
        Ok(out)
    }

    pub async fn create_category(
        &self,
        name: &str,
        parent: Option<CategoryId>,
    ) -> Result<Category, CatalogError> {
        let id = CategoryId::new();
        self.change_tree(|tree| tree.create(id, name, parent).cloned())
            .await
    }

    /// Renames and/or moves a category (`parent`: `Some(None)` moves it to the top level).
    pub async fn change_category(
        &self,
        id: CategoryId,
        name: Option<&str>,
        parent: Option<Option<CategoryId>>,
    ) -> Result<Category, CatalogError> {
        let category = self
            .change_tree(|tree| {
                if let Some(name) = name {
                    tree.rename(id, name)?;
                }
                if let Some(parent) = parent {
                    tree.move_to(id, parent)?;
                }
                tree.get(id).cloned().ok_or(CategoryError::NotFound)
            })
            .await?;
        if parent.is_some() {
            // Products below it now have another category path.
            if let Err(e) = self.indexer.refresh_category(id).await {
                tracing::warn!(error = ?e, "products of a moved category not re-indexed");
            }
        }
        Ok(category)
    }

    /// Deletes a category without subcategories or products.
    pub async fn delete_category(&self, id: CategoryId) -> Result<(), CatalogError> {
        let all = self.indexer.search.count_by_category(false).await?;
        if all.get(&id).copied().unwrap_or(0) > 0 {
            return Err(CatalogError::Conflict {
                code: ErrorCode::CategoryNotEmpty,
                detail: "the category still holds products".to_owned(),
            });
        }
        self.change_tree(|tree| tree.remove(id)).await
    }
}
