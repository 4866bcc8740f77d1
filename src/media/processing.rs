//! Turning untrusted upload bytes into images safe to serve: the format is detected from the
//! bytes, the image is decoded under hard limits, then re-encoded from pixels alone, so EXIF
//! (GPS positions, camera serials), XMP, ICC profiles and comments are all dropped, along with
//! anything smuggled after the image data.
//!
//! Formats: JPEG stays JPEG (quality [`JPEG_QUALITY`]), PNG stays PNG, WebP stays WebP, written
//! lossless (the only WebP encoder available; lossless keeps what the vendor uploaded exactly,
//! at the price of larger files for photos). The EXIF orientation is applied to the pixels
//! before the metadata goes, so phone pictures keep standing upright.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::error::ImageError;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use super::MediaError;
use super::keys::ImageKind;

/// Largest upload accepted, in bytes.
pub const MAX_UPLOAD_BYTES: usize = 5 * 1024 * 1024;
/// Largest width and height accepted, in pixels.
pub const MAX_DIMENSION: u32 = 8_000;
/// Most memory one decode may claim: an 8,000 × 8,000 RGBA picture.
pub const MAX_DECODE_BYTES: u64 = MAX_DIMENSION as u64 * MAX_DIMENSION as u64 * 4;
/// Thumbnails fit in a square of this many pixels.
pub const THUMBNAIL_SIZE: u32 = 320;
/// Quality of re-encoded JPEGs.
pub const JPEG_QUALITY: u8 = 85;

/// An upload, re-encoded, with its thumbnail.
#[derive(Debug)]
pub struct Processed {
    pub kind: ImageKind,
    pub width: u32,
    pub height: u32,
    pub image: Vec<u8>,
    pub thumbnail: Vec<u8>,
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// The accepted format of `bytes`, judged by their magic number alone (never by a file name or
/// a declared content type).
pub fn detect(bytes: &[u8]) -> Result<ImageKind, MediaError> {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => Ok(ImageKind::Jpeg),
        Ok(ImageFormat::Png) => Ok(ImageKind::Png),
        Ok(ImageFormat::WebP) => Ok(ImageKind::Webp),
        Ok(other) => Err(MediaError::Unsupported(format!(
            "{} images are not accepted; upload a JPEG, PNG or WebP",
            other.to_mime_type()
        ))),
        Err(_) => Err(MediaError::Unsupported(
            "the file is not a JPEG, PNG or WebP image".to_owned(),
        )),
    }
}

/// Validates, re-encodes and thumbnails an upload. CPU-bound: run it off the async executor.
pub fn process(bytes: &[u8]) -> Result<Processed, MediaError> {
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(MediaError::TooLarge {
            limit: MAX_UPLOAD_BYTES,
        });
    }
    let kind = detect(bytes)?;
    let image = decode(bytes, kind)?;
    let (width, height) = (image.width(), image.height());
    let encoded = encode(&image, kind).map_err(MediaError::encoding)?;
    let thumbnail = if width <= THUMBNAIL_SIZE && height <= THUMBNAIL_SIZE {
        encoded.clone()
    } else {
        encode(&image.thumbnail(THUMBNAIL_SIZE, THUMBNAIL_SIZE), kind)
            .map_err(MediaError::encoding)?
    };
    Ok(Processed {
        kind,
        width,
        height,
        image: encoded,
        thumbnail,
    })
}

fn decode(bytes: &[u8], kind: ImageKind) -> Result<DynamicImage, MediaError> {
    let format = match kind {
        ImageKind::Jpeg => ImageFormat::Jpeg,
        ImageKind::Png => ImageFormat::Png,
        ImageKind::Webp => ImageFormat::WebP,
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    // The decoder checks the dimensions from the header before any pixel is decoded.
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    limits()
        .reserve(decoder.total_bytes())
        .map_err(decode_error)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn decode_error(e: ImageError) -> MediaError {
    match e {
        ImageError::Limits(_) => MediaError::Invalid(format!(
            "the image may be at most {MAX_DIMENSION} × {MAX_DIMENSION} pixels of 8-bit colour"
        )),
        ImageError::Unsupported(e) => {
            MediaError::Unsupported(format!("this image cannot be read: {e}"))
        }
        ImageError::Decoding(_) | ImageError::IoError(_) | ImageError::Parameter(_) => {
            MediaError::Invalid("the image data is corrupt or truncated".to_owned())
        }
        ImageError::Encoding(_) => MediaError::encoding(e),
    }
}

/// Encodes pixels alone, converting to a colour type the encoder takes.
fn encode(image: &DynamicImage, kind: ImageKind) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    match kind {
        ImageKind::Jpeg => {
            let encoder = JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY);
            match image {
                DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => {
                    image.write_with_encoder(encoder)?;
                }
                DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLuma16(_) => {
                    DynamicImage::ImageLuma8(image.to_luma8()).write_with_encoder(encoder)?;
                }
                _ => DynamicImage::ImageRgb8(image.to_rgb8()).write_with_encoder(encoder)?,
            }
        }
        ImageKind::Png => {
            let encoder = PngEncoder::new_with_quality(
                &mut out,
                CompressionType::Default,
                FilterType::Adaptive,
            );
            match image {
                DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageRgb8(_)
                | DynamicImage::ImageRgba8(_)
                | DynamicImage::ImageLuma16(_)
                | DynamicImage::ImageLumaA16(_)
                | DynamicImage::ImageRgb16(_)
                | DynamicImage::ImageRgba16(_) => image.write_with_encoder(encoder)?,
                _ => DynamicImage::ImageRgba8(image.to_rgba8()).write_with_encoder(encoder)?,
            }
        }
        ImageKind::Webp => {
            let encoder = WebPEncoder::new_lossless(&mut out);
            match image {
                DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageRgb8(_)
                | DynamicImage::ImageRgba8(_) => image.write_with_encoder(encoder)?,
                _ => DynamicImage::ImageRgba8(image.to_rgba8()).write_with_encoder(encoder)?,
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        }));
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn a_png_is_re_encoded_with_a_fitting_thumbnail() {
        let processed = process(&png(640, 480)).unwrap();
        assert_eq!(processed.kind, ImageKind::Png);
        assert_eq!((processed.width, processed.height), (640, 480));
        let thumb = image::load_from_memory(&processed.thumbnail).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (320, 240));
    }

    #[test]
    fn oversized_dimensions_are_refused_before_decoding() {
        assert!(matches!(
            process(&png(MAX_DIMENSION + 1, 1)),
            Err(MediaError::Invalid(_))
        ));
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG that is all header: it claims any size while weighing a few dozen bytes.
    fn png_header(width: u32, height: u32, bit_depth: u8, color_type: u8) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (*b"IHDR", {
                let mut ihdr = width.to_be_bytes().to_vec();
                ihdr.extend_from_slice(&height.to_be_bytes());
                ihdr.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
                ihdr
            }),
            // Image data that ends at once: nothing to inflate.
            (
                *b"IDAT",
                vec![0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
            ),
            (*b"IEND", Vec::new()),
        ] {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(&data);
            out.extend_from_slice(&chunk);
            out.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        out
    }

    #[test]
    fn bombs_are_refused_from_their_header() {
        let refused_for_size = |bytes: Vec<u8>| matches!(process(&bytes), Err(MediaError::Invalid(m)) if m.contains("at most"));
        // 9,000 × 9,000 RGB: over the dimension limit.
        assert!(refused_for_size(png_header(9_000, 9_000, 8, 2)));
        // 8,000 × 8,000 16-bit RGBA: within the dimensions, but 512 MB of pixels.
        assert!(refused_for_size(png_header(8_000, 8_000, 16, 6)));
        // The same header at a size that fits gets as far as the (missing) pixel data.
        assert!(!refused_for_size(png_header(100, 100, 16, 6)));
    }

    #[test]
    fn text_is_not_an_image() {
        assert!(matches!(
            process(b"hello, I am not a picture"),
            Err(MediaError::Unsupported(_))
        ));
    }
}
