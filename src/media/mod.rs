//! Product images: validated by decoding, re-encoded without metadata, thumbnailed, and kept
//! in an object store (a directory in the data dir by default, S3-compatible when configured).
//!
//! Objects are immutable and content-addressed (see [`keys`]), so they can be cached forever
//! and their hash is their entity tag.

pub mod keys;
pub mod processing;

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutOptions, PutPayload,
};
use tokio::sync::Semaphore;

use crate::config::S3Settings;
use crate::domain::catalog::ImageRef;

pub use keys::{ImageKind, MediaKey, Rendition};
pub use processing::{MAX_DIMENSION, MAX_UPLOAD_BYTES, THUMBNAIL_SIZE};

/// `Cache-Control` of every stored object: a key's bytes never change.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// How many uploads are decoded at once; each may claim up to
/// [`processing::MAX_DECODE_BYTES`] and a few copies of it while re-encoding.
const CONCURRENT_DECODES: usize = 2;

/// Why an image was refused or could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the image may be at most {limit} bytes")]
    TooLarge { limit: usize },
    /// Not an accepted format.
    #[error("{0}")]
    Unsupported(String),
    /// An accepted format, but broken or beyond the limits.
    #[error("{0}")]
    Invalid(String),
    /// The object store failed.
    #[error("the media store failed")]
    Store(#[source] object_store::Error),
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl MediaError {
    pub(crate) fn encoding(e: image::ImageError) -> Self {
        MediaError::Internal(anyhow::Error::new(e).context("re-encoding an image"))
    }
}

/// Where images are kept and how they are read back.
#[derive(Clone)]
pub struct Media {
    store: Arc<dyn ObjectStore>,
    backend: &'static str,
    /// Whether objects carry their own `Content-Type` and `Cache-Control` (S3 does, so a CDN
    /// in front of the bucket serves them right; a directory cannot).
    with_attributes: bool,
    decoding: Arc<Semaphore>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("backend", &self.backend)
            .field("store", &self.store.to_string())
            .finish_non_exhaustive()
    }
}

impl Media {
    fn new(store: Arc<dyn ObjectStore>, backend: &'static str, with_attributes: bool) -> Self {
        Media {
            store,
            backend,
            with_attributes,
            decoding: Arc::new(Semaphore::new(CONCURRENT_DECODES)),
        }
    }

    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the media directory {}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .with_context(|| format!("opening the media directory {}", dir.display()))?;
        Ok(Self::new(Arc::new(store), "local", false))
    }

    /// A store in an S3 bucket (or an S3-compatible one at `settings.endpoint`).
    pub fn s3(settings: &S3Settings) -> anyhow::Result<Self> {
        // The HTTP client is built without a bundled TLS crypto provider: the process-wide
        // default must be installed before the first HTTPS connection. Whoever got there first
        // installed the same one, so a refusal is fine.
        if rustls::crypto::ring::default_provider()
            .install_default()
            .is_err()
        {
            tracing::debug!("a TLS crypto provider was already installed");
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_allow_http(settings.allow_http);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .with_context(|| format!("HEXMARKET_S3_*: cannot use bucket {}", settings.bucket))?;
        tracing::info!(
            bucket = %settings.bucket,
            endpoint = settings.endpoint.as_deref().unwrap_or("aws"),
            region = %settings.region,
            "product images in S3"
        );
        Ok(Self::new(Arc::new(store), "s3", true))
    }

    /// A store in memory, gone with the process (tests and tools).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(InMemory::new()), "memory", true)
    }

    /// Which kind of store this is: `local`, `s3` or `memory`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Validates an upload, re-encodes it without metadata, makes its thumbnail and stores
    /// both. `scope` names what the image belongs to (a product id) and goes into the keys,
    /// so deleting one owner's image never removes another's.
    #[tracing::instrument(name = "media.store_image", skip_all, fields(scope = %scope, bytes = bytes.len()))]
    pub async fn store_image(&self, scope: &str, bytes: Bytes) -> Result<ImageRef, MediaError> {
        if bytes.len() > MAX_UPLOAD_BYTES {
            return Err(MediaError::TooLarge {
                limit: MAX_UPLOAD_BYTES,
            });
        }
        // Cheap, so a wrong format is refused without waiting for a decoding slot.
        processing::detect(&bytes)?;
        let permit = Arc::clone(&self.decoding)
            .acquire_owned()
            .await
            .map_err(|e| MediaError::Internal(e.into()))?;
        // The permit moves into the task: it is held until decoding ends even if the request
        // is abandoned meanwhile.
        let processed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            processing::process(&bytes)
        })
        .await
        .map_err(|e| MediaError::Internal(anyhow::Error::new(e).context("image processing")))??;

        let kind = processed.kind;
        let image_key = MediaKey::for_content(Rendition::Image, kind, scope, &processed.image);
        let thumbnail_key =
            MediaKey::for_content(Rendition::Thumbnail, kind, scope, &processed.thumbnail);
        tokio::try_join!(
            self.put(&image_key, processed.image),
            self.put(&thumbnail_key, processed.thumbnail),
        )?;
        tracing::debug!(key = %image_key, width = processed.width, height = processed.height, "image stored");
        Ok(ImageRef {
            key: image_key.to_string(),
            thumbnail_key: thumbnail_key.to_string(),
            content_type: kind.content_type().to_owned(),
            width: processed.width,
            height: processed.height,
        })
    }

    async fn put(&self, key: &MediaKey, bytes: Vec<u8>) -> Result<(), MediaError> {
        let mut options = PutOptions::default();
        if self.with_attributes {
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, key.content_type().into());
            attributes.insert(Attribute::CacheControl, IMMUTABLE.into());
            options.attributes = attributes;
        }
        self.store
            .put_opts(&key.path(), PutPayload::from(bytes), options)
            .await
            .map_err(MediaError::Store)?;
        Ok(())
    }

    /// The bytes and content type stored under `key`. `None` for a missing object and for
    /// anything that is not a media key, so no other object or file can ever be read.
    #[tracing::instrument(name = "media.open", skip(self))]
    pub async fn open(&self, key: &str) -> Result<Option<(Bytes, &'static str)>, MediaError> {
        let Some(key) = MediaKey::parse(key) else {
            return Ok(None);
        };
        let found = match self.store.get(&key.path()).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(MediaError::Store(e)),
        };
        let bytes = found.bytes().await.map_err(MediaError::Store)?;
        Ok(Some((bytes, key.content_type())))
    }

    /// Deletes these objects, best-effort: a failure is logged, never returned (an orphaned
    /// object costs storage, not correctness).
    #[tracing::instrument(name = "media.delete", skip_all)]
    pub async fn delete<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        for raw in keys {
            let Some(key) = MediaKey::parse(raw) else {
                tracing::warn!(key = raw, "not a media key; nothing deleted");
                continue;
            };
            match self.store.delete(&key.path()).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(key = raw, error = %e, "media object not deleted"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn jpeg() -> Bytes {
        let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(400, 100, |x, _| {
            image::Rgb([(x % 256) as u8, 10, 200])
        }));
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
            .unwrap();
        Bytes::from(out)
    }

    #[tokio::test]
    async fn stored_images_open_until_deleted() {
        let media = Media::in_memory();
        let stored = media.store_image("p1", jpeg()).await.unwrap();
        assert_eq!((stored.width, stored.height), (400, 100));
        assert_eq!(stored.content_type, "image/jpeg");
        let (bytes, content_type) = media.open(&stored.thumbnail_key).await.unwrap().unwrap();
        assert_eq!(content_type, "image/jpeg");
        let thumb = image::load_from_memory(&bytes).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (320, 80));

        media
            .delete([stored.key.as_str(), stored.thumbnail_key.as_str()])
            .await;
        assert!(media.open(&stored.key).await.unwrap().is_none());
        assert!(media.open("../secret").await.unwrap().is_none());
    }

    #[test]
    fn an_s3_store_builds_from_settings_without_connecting() {
        let settings = S3Settings {
            bucket: "hexmarket-images".to_owned(),
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            region: "us-east-1".to_owned(),
            access_key_id: Some("minio".to_owned()),
            secret_access_key: Some("minio-secret".to_owned()),
            allow_http: true,
        };
        let media = Media::s3(&settings).unwrap();
        assert_eq!(media.backend(), "s3");
        // A second store in the same process finds the TLS provider installed.
        assert!(Media::s3(&settings).is_ok());
    }

    #[tokio::test]
    async fn local_store_refuses_paths_outside_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.key"), b"secret").unwrap();
        let media = Media::local(&dir.path().join("media")).unwrap();
        for key in ["../secret.key", "images/../../secret.key", "/etc/passwd"] {
            assert!(media.open(key).await.unwrap().is_none(), "{key}");
        }
    }
}
