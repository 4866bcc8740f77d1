//! Every object key the media store uses, built and parsed in one place.
//!
//! A key is `images/{hash}.{ext}` or `thumbs/{hash}.{ext}`: a SHA-256 in lowercase hex and the
//! extension of one of the accepted formats. Nothing else is ever read or written, so a key
//! taken from a URL can name no other object and no path outside the store.

use object_store::path::Path;
use sha2::{Digest, Sha256};

/// The image formats accepted and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Webp,
}

impl ImageKind {
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpg",
            ImageKind::Png => "png",
            ImageKind::Webp => "webp",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
            ImageKind::Webp => "image/webp",
        }
    }

    fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "jpg" => Some(ImageKind::Jpeg),
            "png" => Some(ImageKind::Png),
            "webp" => Some(ImageKind::Webp),
            _ => None,
        }
    }
}

/// Which rendition of an image a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendition {
    /// The re-encoded upload.
    Image,
    /// Its thumbnail.
    Thumbnail,
}

impl Rendition {
    fn prefix(self) -> &'static str {
        match self {
            Rendition::Image => "images",
            Rendition::Thumbnail => "thumbs",
        }
    }

    fn from_prefix(prefix: &str) -> Option<Self> {
        match prefix {
            "images" => Some(Rendition::Image),
            "thumbs" => Some(Rendition::Thumbnail),
            _ => None,
        }
    }
}

/// A valid media key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaKey {
    rendition: Rendition,
    hash: String,
    kind: ImageKind,
}

const HASH_HEX_LEN: usize = 64;

impl MediaKey {
    /// The key of `bytes` stored for `scope`. The scope (a product id) is hashed in so that the
    /// same picture uploaded for two products gets two objects: removing it from one product
    /// can then delete its objects without breaking the other.
    pub fn for_content(rendition: Rendition, kind: ImageKind, scope: &str, bytes: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update([0u8]);
        hasher.update(bytes);
        let digest = hasher.finalize();
        let hash = digest.iter().map(|b| format!("{b:02x}")).collect();
        MediaKey {
            rendition,
            hash,
            kind,
        }
    }

    /// Parses a key from outside (a URL, a stored product); anything but the exact shape
    /// `{images|thumbs}/{64 lowercase hex}.{jpg|png|webp}` is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let (prefix, file) = raw.split_once('/')?;
        let rendition = Rendition::from_prefix(prefix)?;
        let (hash, ext) = file.split_once('.')?;
        let kind = ImageKind::from_extension(ext)?;
        let hex = hash.len() == HASH_HEX_LEN
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex.then(|| MediaKey {
            rendition,
            hash: hash.to_owned(),
            kind,
        })
    }

    pub fn rendition(&self) -> Rendition {
        self.rendition
    }

    /// The content hash, which doubles as the entity tag: a key's bytes never change.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    pub fn content_type(&self) -> &'static str {
        self.kind.content_type()
    }

    /// The object's location in the store.
    pub(super) fn path(&self) -> Path {
        Path::from(self.to_string())
    }
}

impl std::fmt::Display for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}.{}",
            self.rendition.prefix(),
            self.hash,
            self.kind.extension()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_scope_changes_the_hash() {
        let a = MediaKey::for_content(Rendition::Image, ImageKind::Png, "p1", b"pixels");
        let b = MediaKey::for_content(Rendition::Image, ImageKind::Png, "p2", b"pixels");
        assert_ne!(a.hash(), b.hash());
        let text = a.to_string();
        assert!(text.starts_with("images/") && text.ends_with(".png"));
        assert_eq!(MediaKey::parse(&text), Some(a.clone()));
        assert_eq!(a.path().as_ref(), text);
    }

    #[test]
    fn anything_but_the_exact_shape_is_refused() {
        let hash = "a".repeat(64);
        assert!(MediaKey::parse(&format!("thumbs/{hash}.webp")).is_some());
        for bad in [
            format!("images/{hash}.gif"),
            format!("images/{}.png", "A".repeat(64)),
            format!("images/{}.png", "a".repeat(63)),
            format!("other/{hash}.png"),
            format!("images/../{hash}.png"),
            format!("images/{hash}.png/.."),
            format!("/images/{hash}.png"),
            "images/..%2F..%2Fsecret.key".to_owned(),
            "../store".to_owned(),
            String::new(),
        ] {
            assert_eq!(MediaKey::parse(&bad), None, "{bad}");
        }
    }
}
