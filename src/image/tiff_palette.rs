//! Palette ("P" mode) TIFF files. The `tiff` crate decodes grey, RGB, RGBA and CMYK but not
//! palette images, while Pillow (ComfyUI's loader) opens them. The indices of a palette
//! image are stored exactly as an 8-bit grey image's samples, with every compression the
//! crate handles, so the first IFD's PhotometricInterpretation is rewritten to BlackIsZero
//! in a copy of the file, the crate decodes the indices, and the ColorMap turns them into
//! RGB keeping each 16-bit entry's high byte, as Pillow does. The Orientation tag is applied
//! as for other TIFF files.

use std::io::Cursor;

use ::image::metadata::Orientation;
use ::image::{DynamicImage, RgbImage as RgbBuffer};
use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;

use super::limits::{check_dimensions, one_line, MAX_DECODE_ALLOC};
use crate::{Error, Result};

const PHOTOMETRIC: u16 = 262;
const BLACK_IS_ZERO: u16 = 1;

/// `Ok(None)` when `bytes` is not a palette TIFF (the caller decodes it as usual).
pub fn decode(bytes: &[u8], name: &str) -> Result<Option<DynamicImage>> {
    let bad = |e: tiff::TiffError| {
        Error::invalid(format!(
            "{name}: corrupt or unreadable palette TIFF file: {}",
            one_line(&e.to_string())
        ))
    };
    let Ok(mut d) = Decoder::new(Cursor::new(bytes)) else {
        return Ok(None);
    };
    // The crate refuses to give a palette image a colour type; read the tags themselves.
    const RGB_PALETTE: u16 = 3;
    if d.find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
        .ok()
        .flatten()
        != Some(RGB_PALETTE)
    {
        return Ok(None);
    }
    let bits = d
        .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)
        .ok()
        .flatten()
        .and_then(|v| v.first().copied())
        .unwrap_or(1);
    if bits != 8 {
        return Err(Error::invalid(format!(
            "{name}: palette TIFF with {bits}-bit indices is not supported (8-bit palettes are)"
        )));
    }
    let (w, h) = d.dimensions().map_err(bad)?;
    check_dimensions(name, w, h)?;
    // Indices, RGB and the f32 copy: refuse before decoding what the f32 step would refuse.
    let f32_bytes = u64::from(w) * u64::from(h) * 12;
    if f32_bytes > MAX_DECODE_ALLOC {
        return Err(Error::invalid(format!(
            "{name}: refused a {w}x{h} palette image: its f32 pixels would need {} MiB (limit {} MiB)",
            f32_bytes >> 20,
            MAX_DECODE_ALLOC >> 20
        )));
    }
    let map = d.get_tag_u16_vec(Tag::ColorMap).map_err(bad)?;
    if map.len() != 3 * 256 {
        return Err(Error::invalid(format!(
            "{name}: palette TIFF ColorMap has {} entries; 8-bit indices need 768",
            map.len()
        )));
    }
    let orientation = d
        .find_tag_unsigned::<u8>(Tag::Orientation)
        .ok()
        .flatten()
        .and_then(Orientation::from_exif)
        .unwrap_or(Orientation::NoTransforms);
    let patched = as_grey(bytes).ok_or_else(|| {
        Error::invalid(format!(
            "{name}: palette TIFF whose first directory cannot be read"
        ))
    })?;
    let mut grey = Decoder::new(Cursor::new(&patched[..])).map_err(bad)?;
    let indices = match grey.read_image().map_err(bad)? {
        DecodingResult::U8(v) => v,
        _ => {
            return Err(Error::invalid(format!(
                "{name}: palette TIFF indices are not 8-bit"
            )))
        }
    };
    let n = w as usize * h as usize;
    if indices.len() < n {
        return Err(Error::invalid(format!(
            "{name}: truncated palette TIFF ({} of {n} pixels)",
            indices.len()
        )));
    }
    let mut rgb = Vec::with_capacity(n * 3);
    for &i in &indices[..n] {
        let i = i as usize;
        rgb.extend([map[i] >> 8, map[256 + i] >> 8, map[512 + i] >> 8].map(|v| v as u8));
    }
    let buf = RgbBuffer::from_raw(w, h, rgb)
        .ok_or_else(|| Error::invalid(format!("{name}: palette TIFF size mismatch")))?;
    let mut img = DynamicImage::ImageRgb8(buf);
    img.apply_orientation(orientation);
    Ok(Some(img))
}

/// A copy of a TIFF file whose first IFD says BlackIsZero instead of RGB palette.
fn as_grey(bytes: &[u8]) -> Option<Vec<u8>> {
    let le = match bytes.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    // Classic TIFF: 12-byte entries after a u16 count; BigTIFF: 20-byte entries after a u64.
    let (first, count, entry, value_at) = match u16_at(2)? {
        42 => {
            let ifd = u32_at(4)? as usize;
            (ifd + 2, u16_at(ifd)? as usize, 12, 8)
        }
        43 => {
            let ifd = usize::try_from(u64_at(8)?).ok()?;
            (ifd + 8, usize::try_from(u64_at(ifd)?).ok()?, 20, 12)
        }
        _ => return None,
    };
    for k in 0..count {
        let at = first.checked_add(k.checked_mul(entry)?)?;
        if u16_at(at)? == PHOTOMETRIC {
            // The value sits left-justified in the entry, as a SHORT (type 3) or a LONG (4).
            let v = at + value_at;
            let new: Vec<u8> = match (u16_at(at + 2)?, le) {
                (4, true) => u32::from(BLACK_IS_ZERO).to_le_bytes().to_vec(),
                (4, false) => u32::from(BLACK_IS_ZERO).to_be_bytes().to_vec(),
                (_, true) => BLACK_IS_ZERO.to_le_bytes().to_vec(),
                (_, false) => BLACK_IS_ZERO.to_be_bytes().to_vec(),
            };
            bytes.get(v..v + new.len())?;
            let mut out = bytes.to_vec();
            out[v..v + new.len()].copy_from_slice(&new);
            return Some(out);
        }
    }
    None
}
