//! SigLIP2 "naflex" preprocessing (contract §4b): the image keeps its aspect ratio and is
//! resized to a grid of whole patches holding at most `num_patches` of them, then cut into
//! flattened patches. This is ComfyUI's `siglip2_preprocess` (float images: bilinear
//! antialiased resize, 8-bit quantisation, mean/std), whose grid choice is the binary search of
//! Hugging Face's `get_image_size_for_max_num_patches`.

use serde::Serialize;

use super::resize::{self, try_zeroed, Filter, SrcView};
use crate::{Error, Result};

/// A patch grid: `rows × cols` patches (Hugging Face's `spatial_shapes` entry, height first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Grid {
    pub rows: usize,
    pub cols: usize,
}

impl Grid {
    pub fn new(rows: usize, cols: usize) -> Grid {
        Grid { rows, cols }
    }

    /// Patches (tokens) in the grid.
    pub fn patches(self) -> usize {
        self.rows * self.cols
    }
}

/// `grids` as Hugging Face's `spatial_shapes` `[B, 2]` int64, row-major: each grid's rows,
/// then its columns.
pub fn spatial_shapes(grids: &[Grid]) -> Vec<i64> {
    grids
        .iter()
        .flat_map(|g| [g.rows as i64, g.cols as i64])
        .collect()
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

/// How a naflex model cuts images: square patches of `patch_size` pixels, at most
/// `num_patches` of them per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patching {
    pub patch_size: usize,
    pub num_patches: usize,
}

impl Patching {
    /// Values of one flattened patch: `P · P · 3`, laid out (row, column, channel).
    pub fn patch_len(self) -> usize {
        self.patch_size * self.patch_size * 3
    }

    /// Values of one image's padded patch rows: `num_patches · 3·P²`.
    pub fn image_len(self) -> usize {
        self.num_patches * self.patch_len()
    }

    /// The grid an `h × w` image is resized to: the largest scale whose sides, each rounded
    /// up to whole patches (at least one), give at most `num_patches` patches. The binary
    /// search over the scale is Hugging Face's and ComfyUI's, step for step in f64 (Python's
    /// floats), so all three agree on every size.
    pub fn grid_for(self, h: usize, w: usize) -> Grid {
        let p = self.patch_size as f64;
        let side = |size: usize, scale: f64| -> usize {
            let patches = (size as f64 * scale / p).ceil();
            (patches as usize).max(1)
        };
        let eps = 1e-5;
        let (mut lo, mut hi) = (eps / 10.0, 100.0f64);
        while hi - lo >= eps {
            let mid = (lo + hi) / 2.0;
            if side(h, mid) * side(w, mid) <= self.num_patches {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Grid::new(side(h, lo), side(w, lo))
    }

    fn validate(self) -> Result<()> {
        if self.patch_size == 0 || self.num_patches == 0 {
            return Err(Error::invalid(format!(
                "preprocess: patch size {} and patch count {} must both be at least 1",
                self.patch_size, self.num_patches
            )));
        }
        Ok(())
    }
}

/// One image (HWC, `src.channels` interleaved, 0..1) to its grid and padded patch rows:
/// `num_patches · 3·P²` values whose first `grid.patches()` rows are the patches in row-major
/// order, each patch laid out (row, column, channel) as `Linear` patch embeddings take them;
/// the rows after them are zero.
pub(crate) fn prepare_patches(
    src: SrcView<'_>,
    patching: Patching,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<(Vec<f32>, Grid)> {
    patching.validate()?;
    let (h, w) = (src.height, src.width);
    if h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "preprocess: image is {w}x{h}; both sides must be at least 1 pixel"
        )));
    }
    let grid = patching.grid_for(h, w);
    let p = patching.patch_size;
    let (oh, ow) = (grid.rows * p, grid.cols * p);
    // ComfyUI always calls interpolate; a pass whose axis keeps its size is the identity.
    let resized = resize::resize_window(Filter::Bilinear, src, oh, ow, 0..oh, 0..ow)?;
    let mut out = try_zeroed(patching.image_len())?;
    let patch_len = patching.patch_len();
    for (i, dst) in out
        .chunks_exact_mut(patch_len)
        .take(grid.patches())
        .enumerate()
    {
        let (top, left) = ((i / grid.cols) * p, (i % grid.cols) * p);
        for y in 0..p {
            let row = &resized[((top + y) * ow + left) * 3..((top + y) * ow + left + p) * 3];
            for (k, (d, &x)) in dst[y * p * 3..(y + 1) * p * 3]
                .iter_mut()
                .zip(row)
                .enumerate()
            {
                let ch = k % 3;
                let q = (255.0f32 * x).clamp(0.0, 255.0).round_ties_even() / 255.0f32;
                *d = (q - mean[ch]) / std[ch];
            }
        }
    }
    Ok((out, grid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn so400m() -> Patching {
        Patching {
            patch_size: 16,
            num_patches: 256,
        }
    }

    #[test]
    fn grids_keep_the_aspect_and_fill_the_budget() {
        let n = so400m();
        assert_eq!(n.grid_for(512, 512), Grid::new(16, 16));
        assert_eq!(n.grid_for(224, 224), Grid::new(16, 16));
        // 1:4 and 4:1: 8 × 32 patches.
        assert_eq!(n.grid_for(100, 400), Grid::new(8, 32));
        assert_eq!(n.grid_for(400, 100), Grid::new(32, 8));
        // Extreme aspects still get one patch on the short side.
        assert_eq!(n.grid_for(1, 20000).rows, 1);
        assert!(n.grid_for(1, 20000).cols <= 256);
        for (h, w) in [(480, 640), (333, 500), (7, 300), (1080, 1920), (61, 97)] {
            let g = n.grid_for(h, w);
            assert!(g.patches() <= 256, "{h}x{w}: {g}");
            // One more patch on either side would overflow, or the scale search ended there.
            assert!(g.rows >= 1 && g.cols >= 1);
        }
    }

    #[test]
    fn patches_are_row_major_and_padded_with_zeros() {
        // A 2×4 image (rows, cols) whose pixel value encodes its position; patch 1, at most 16
        // patches: the grid is the image itself (scale 2 would need 32 patches).
        let patching = Patching {
            patch_size: 1,
            num_patches: 8,
        };
        let mut data = Vec::new();
        for y in 0..2 {
            for x in 0..4 {
                let v = (y * 4 + x) as f32 / 255.0;
                data.extend([v, v, v]);
            }
        }
        let src = SrcView {
            data: &data,
            height: 2,
            width: 4,
            channels: 3,
        };
        let (out, grid) = prepare_patches(src, patching, [0.0; 3], [1.0; 3]).unwrap();
        assert_eq!(grid, Grid::new(2, 4));
        assert_eq!(out.len(), 8 * 3);
        for i in 0..8 {
            assert_eq!(out[i * 3], i as f32 / 255.0, "patch {i}");
        }
        let patching = Patching {
            patch_size: 1,
            num_patches: 12,
        };
        let (out, grid) = prepare_patches(src, patching, [0.0; 3], [1.0; 3]).unwrap();
        assert_eq!(grid, Grid::new(2, 4));
        assert!(out[8 * 3..].iter().all(|&v| v == 0.0));
    }
}
