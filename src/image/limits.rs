//! What an image file may cost: the largest sides and decoder memory, checked by every
//! decoder (the `image` crate's and the palette TIFF reader), and their messages.

use ::image::Limits;

use crate::{Error, Result};

/// The largest width or height a file may declare.
pub const MAX_DIMENSION: u32 = 16384;
/// The most memory a decoder may allocate for one image (1 GiB).
pub const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// The decoders' limits.
pub(super) fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_DIMENSION);
    l.max_image_height = Some(MAX_DIMENSION);
    l.max_alloc = Some(MAX_DECODE_ALLOC);
    l
}

/// The limits in words, for messages.
pub(super) fn limit_text() -> String {
    format!(
        "the limits are {MAX_DIMENSION}x{MAX_DIMENSION} pixels and {} MiB of decoder memory",
        MAX_DECODE_ALLOC >> 20
    )
}

/// Refuses an empty image, or one past [`MAX_DIMENSION`] on a side.
pub(super) fn check_dimensions(name: &str, w: u32, h: u32) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::invalid(format!(
            "{name}: image is {w}x{h}; both sides must be at least 1 pixel"
        )));
    }
    if w > MAX_DIMENSION || h > MAX_DIMENSION {
        return Err(Error::invalid(format!(
            "{name}: refused to decode a {w}x{h} image; {}",
            limit_text()
        )));
    }
    Ok(())
}

/// A decoder's message on one line: some put newlines in theirs (zune-jpeg's "Found a
/// marker with invalid length:N\n"), which would split one error over several lines.
pub(super) fn one_line(msg: &str) -> String {
    // image quotes some decoder messages with Debug, so the newline arrives escaped.
    msg.replace("\\n\"", "\"")
        .replace("\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
