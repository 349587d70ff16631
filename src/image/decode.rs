//! Image files to RGB f32, the way ComfyUI's `LoadImage` sees them: PIL opens the file,
//! `ImageOps.exif_transpose` applies the EXIF orientation, `convert("RGB")` makes 8-bit RGB
//! (grey replicated, alpha dropped, 16-bit samples cut to their high byte), and numpy divides
//! by 255 in f32.
//!
//! One deliberate difference: Pillow (10 and later) opens a 16-bit grey PNG as mode `I;16`,
//! which ComfyUI's `if i.mode == 'I'` rescaling misses, so `convert("RGB")` clips every sample
//! above 255 and such images arrive almost white. Here 16-bit grey keeps its high byte, like
//! 16-bit RGB does in PIL.
//!
//! Known small differences: JPEG is decoded by zune-jpeg, not libjpeg-turbo, so pixels may
//! differ by a few levels (up to 4/255 in the fixtures); only the first frame of an animation
//! is used (ComfyUI stacks the frames of equal size into a batch).

use std::io::Cursor;
use std::path::Path;

use ::image::error::LimitErrorKind;
use ::image::metadata::Orientation;
use ::image::{DynamicImage, ImageDecoder, ImageError, ImageReader};

use super::limits::{check_dimensions, limit_text, limits, one_line, MAX_DECODE_ALLOC};
use super::RgbImage;
use crate::{Error, ErrorKind, Result};

const SUPPORTED: &str = "PNG, JPEG, WebP, BMP, GIF, TIFF (grey, RGB, RGBA, CMYK, 8-bit palette)";

/// Reads and decodes one image file. Errors name the file.
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    if path.is_dir() {
        return Err(Error::invalid(format!(
            "{}: is a folder, not an image file",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, &path.display().to_string())
}

/// Decodes an image held in memory; `name` is used in error messages.
pub fn decode_bytes(bytes: &[u8], name: &str) -> Result<RgbImage> {
    // The decoders are fuzzed upstream and no input found here makes them panic; should one
    // still do so on some hostile file, that file fails instead of the whole batch.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_inner(bytes, name)))
        .unwrap_or_else(|_| {
            Err(Error::invalid(format!(
                "{name}: the image decoder failed on this file (corrupt or hostile data)"
            )))
        })
}

fn decode_inner(bytes: &[u8], name: &str) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::invalid(format!(
            "{name}: empty file (0 bytes), not an image"
        )));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::new(ErrorKind::Io, format!("{name}: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(Error::invalid(format!(
            "{name}: not a recognised image file (supported formats: {SUPPORTED})"
        )));
    };
    let fmt_name = format!("{format:?}");
    if format == ::image::ImageFormat::Tiff {
        if let Some(img) = super::tiff_palette::decode(bytes, name)? {
            return to_rgb_f32(&img, name);
        }
    }
    let mut reader = reader;
    reader.limits(limits());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| image_error(e, name, &fmt_name, bytes))?;
    let (w, h) = decoder.dimensions();
    check_dimensions(name, w, h)?;
    if decoder.total_bytes() > MAX_DECODE_ALLOC {
        return Err(Error::invalid(format!(
            "{name}: refused to decode a {w}x{h} image needing {} MiB; {}",
            decoder.total_bytes() >> 20,
            limit_text()
        )));
    }
    // PIL's exif_transpose; an unreadable EXIF block is ignored rather than failing the image.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, name, &fmt_name, bytes))?;
    img.apply_orientation(orientation);
    to_rgb_f32(&img, name)
}

fn image_error(e: ImageError, name: &str, format: &str, bytes: &[u8]) -> Error {
    let text = one_line(&e.to_string());
    match &e {
        ImageError::Limits(le) => {
            // Say what the file claims, read from its header without limits (no pixel data is
            // read, so this allocates nothing large).
            let claimed = ImageReader::new(Cursor::new(bytes))
                .with_guessed_format()
                .ok()
                .and_then(|mut r| {
                    r.no_limits();
                    r.into_dimensions().ok()
                });
            let what = match claimed {
                Some((w, h)) => format!("a {w}x{h} image"),
                None => "this image".to_string(),
            };
            let why = match le.kind() {
                LimitErrorKind::DimensionError => "its size exceeds the limit",
                LimitErrorKind::InsufficientMemory => "it needs more memory than allowed",
                _ => "the decoder cannot honour the limits",
            };
            Error::invalid(format!(
                "{name}: refused to decode {what} ({why}); {}",
                limit_text()
            ))
        }
        ImageError::Unsupported(_) => Error::invalid(format!(
            "{name}: unsupported {format} variant: {text} (supported formats: {SUPPORTED})"
        )),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::invalid(format!(
                "{name}: truncated or corrupt {format} file: {text}"
            ))
        }
        _ => Error::invalid(format!(
            "{name}: corrupt or unreadable {format} file: {text}"
        )),
    }
}

/// PIL `convert("RGB")` then `np.float32 / 255`.
fn to_rgb_f32(img: &DynamicImage, name: &str) -> Result<RgbImage> {
    let (w, h) = (img.width(), img.height());
    let n = (w as usize)
        .checked_mul(h as usize)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| Error::invalid(format!("{name}: image {w}x{h} is too large")))?;
    // The f32 copy is 12 bytes a pixel (plus the u8 RGB copy for most formats): bound it by
    // the same budget as the decoder, so one huge image cannot take several GiB per thread.
    if (n as u64).saturating_mul(4) > MAX_DECODE_ALLOC {
        return Err(Error::invalid(format!(
            "{name}: refused a {w}x{h} image: its f32 pixels would need {} MiB (limit {} MiB, about {} megapixels)",
            (n as u64 * 4) >> 20,
            MAX_DECODE_ALLOC >> 20,
            MAX_DECODE_ALLOC / 12 / 1_000_000
        )));
    }
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| {
        Error::invalid(format!(
            "{name}: cannot allocate memory for a {w}x{h} image"
        ))
    })?;
    let lut: [f32; 256] = std::array::from_fn(|i| i as f32 / 255.0f32);
    match img {
        // 16-bit samples: PIL's unpackers keep the most significant byte (no rounding).
        DynamicImage::ImageRgb16(b) => {
            data.extend(b.as_raw().iter().map(|&v| lut[(v >> 8) as usize]));
        }
        DynamicImage::ImageRgba16(b) => {
            for px in b.as_raw().chunks_exact(4) {
                data.extend(px[..3].iter().map(|&v| lut[(v >> 8) as usize]));
            }
        }
        DynamicImage::ImageLuma16(b) => {
            for &v in b.as_raw() {
                let g = lut[luma16_to_u8(v) as usize];
                data.extend([g, g, g]);
            }
        }
        DynamicImage::ImageLumaA16(b) => {
            for px in b.as_raw().chunks_exact(2) {
                let g = lut[(px[0] >> 8) as usize];
                data.extend([g, g, g]);
            }
        }
        other => {
            let rgb = other.to_rgb8();
            data.extend(rgb.as_raw().iter().map(|&v| lut[v as usize]));
        }
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

/// A 16-bit grey sample as ComfyUI ends up with it in 8 bits.
fn luma16_to_u8(v: u16) -> u8 {
    (v >> 8) as u8
}
