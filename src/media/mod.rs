//! Product images: validated by decoding, re-encoded without metadata, thumbnailed, and kept
//! in an object store (a directory in the data dir by default, S3-compatible when configured).

/// Where images are kept and how they are read back.
#[derive(Clone)]
pub struct Media {}

impl Media {
    /// A store in a local directory.
    pub fn local(_dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Media {})
    }
}
