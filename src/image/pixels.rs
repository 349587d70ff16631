//! A batch of prepared images as a model's embed block takes them: square NCHW pixels, or a
//! naflex model's padded patch rows with each image's grid.

use std::ops::Range;

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};

use super::naflex::Grid;
use super::PreprocessSpec;
use crate::{Error, Result};

/// One prepared image: `3·S·S` values (CHW), or a naflex model's `num_patches · 3·P²` padded
/// patch rows with its grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub values: Vec<f32>,
    pub grid: Option<Grid>,
}

/// A batch of prepared images.
#[derive(Clone, Debug)]
pub enum Pixels {
    /// `[B, 3, S, S]`.
    Square(Array4<f32>),
    /// `[B, num_patches, 3·P²]`: image `i`'s first `grids[i].patches()` rows are its patches
    /// (row-major), the rest padding.
    Patches {
        values: Array3<f32>,
        grids: Vec<Grid>,
    },
}

/// A borrowed [`Pixels`] (or a part of one).
#[derive(Clone, Copy, Debug)]
pub enum PixelsView<'a> {
    Square(ArrayView4<'a, f32>),
    Patches {
        values: ArrayView3<'a, f32>,
        grids: &'a [Grid],
    },
}

impl Pixels {
    /// Prepared images of one spec (all square, or all naflex) as a batch.
    pub fn from_prepared(rows: Vec<Prepared>, spec: &PreprocessSpec) -> Result<Pixels> {
        let n = rows.len();
        let len = spec.image_len();
        let mut values: Vec<f32> = Vec::new();
        let total = n.checked_mul(len);
        if total.is_none_or(|t| values.try_reserve_exact(t).is_err()) {
            return Err(Error::invalid(format!(
                "{n} prepared images do not fit in memory at once; encode them in shards (`shard_size=N`)"
            )));
        }
        let mut grids = Vec::with_capacity(n);
        for r in rows {
            if r.values.len() != len || r.grid.is_some() != spec.patching.is_some() {
                return Err(Error::runtime(format!(
                    "a prepared image holds {} values, the model's images {len}",
                    r.values.len()
                )));
            }
            values.extend(r.values);
            grids.extend(r.grid);
        }
        Pixels::from_values(values, grids, spec)
    }

    /// `values` of `B` images laid out as `spec` makes them, with their grids (naflex only).
    pub fn from_values(
        values: Vec<f32>,
        grids: Vec<Grid>,
        spec: &PreprocessSpec,
    ) -> Result<Pixels> {
        let bad = |e: ndarray::ShapeError| Error::invalid(format!("pixels: {e}"));
        match spec.patching {
            None => {
                let s = spec.size as usize;
                let n = values.len() / (3 * s * s).max(1);
                Array4::from_shape_vec((n, 3, s, s), values)
                    .map(Pixels::Square)
                    .map_err(bad)
            }
            Some(p) => {
                let shape = (grids.len(), p.num_patches, p.patch_len());
                let values = Array3::from_shape_vec(shape, values).map_err(bad)?;
                Ok(Pixels::Patches { values, grids })
            }
        }
    }

    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.shape()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[B, 3, S, S]` or `[B, num_patches, 3·P²]`.
    pub fn shape(&self) -> &[usize] {
        match self {
            Pixels::Square(a) => a.shape(),
            Pixels::Patches { values, .. } => values.shape(),
        }
    }

    pub fn view(&self) -> PixelsView<'_> {
        match self {
            Pixels::Square(a) => PixelsView::Square(a.view()),
            Pixels::Patches { values, grids } => PixelsView::Patches {
                values: values.view(),
                grids,
            },
        }
    }

    /// The batches one after the other; they must be of one kind and row shape.
    pub fn concat(mut parts: Vec<Pixels>) -> Result<Pixels> {
        if parts.len() == 1 {
            return parts.pop().ok_or_else(|| Error::invalid("no pixels"));
        }
        let mismatch = |e: ndarray::ShapeError| {
            Error::invalid(format!(
                "pixels and images have different shapes (prepared for another model?): {e}"
            ))
        };
        if parts.iter().all(|p| matches!(p, Pixels::Square(_))) {
            let views: Vec<_> = parts
                .iter()
                .filter_map(|p| match p {
                    Pixels::Square(a) => Some(a.view()),
                    Pixels::Patches { .. } => None,
                })
                .collect();
            return ndarray::concatenate(Axis(0), &views)
                .map(Pixels::Square)
                .map_err(mismatch);
        }
        let mut views = Vec::new();
        let mut grids = Vec::new();
        for p in &parts {
            match p {
                Pixels::Patches { values, grids: g } => {
                    views.push(values.view());
                    grids.extend_from_slice(g);
                }
                Pixels::Square(_) => {
                    return Err(Error::invalid(
                        "square pixels and naflex patches cannot be encoded together",
                    ))
                }
            }
        }
        let values = ndarray::concatenate(Axis(0), &views).map_err(mismatch)?;
        Ok(Pixels::Patches { values, grids })
    }
}

impl<'a> PixelsView<'a> {
    pub fn len(&self) -> usize {
        self.shape()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            PixelsView::Square(a) => a.shape(),
            PixelsView::Patches { values, .. } => values.shape(),
        }
    }

    /// The grids of a naflex batch; `None` for square pixels.
    pub fn grids(&self) -> Option<&'a [Grid]> {
        match *self {
            PixelsView::Square(_) => None,
            PixelsView::Patches { grids, .. } => Some(grids),
        }
    }

    /// Images `range` of the batch.
    pub fn slice(self, range: Range<usize>) -> PixelsView<'a> {
        match self {
            PixelsView::Square(a) => {
                PixelsView::Square(a.slice_axis_move(Axis(0), range.clone().into()))
            }
            PixelsView::Patches { values, grids } => PixelsView::Patches {
                values: values.slice_axis_move(Axis(0), range.clone().into()),
                grids: &grids[range],
            },
        }
    }

    /// An owned copy.
    pub fn to_owned(self) -> Pixels {
        match self {
            PixelsView::Square(a) => Pixels::Square(a.to_owned()),
            PixelsView::Patches { values, grids } => Pixels::Patches {
                values: values.to_owned(),
                grids: grids.to_vec(),
            },
        }
    }

    /// Batches of at most `n` images, in order.
    pub fn chunks(self, n: usize) -> impl Iterator<Item = PixelsView<'a>> {
        let n = n.max(1);
        let len = self.len();
        (0..len)
            .step_by(n)
            .map(move |start| self.slice(start..(start + n).min(len)))
    }
}

impl<'a> From<ArrayView4<'a, f32>> for PixelsView<'a> {
    fn from(a: ArrayView4<'a, f32>) -> PixelsView<'a> {
        PixelsView::Square(a)
    }
}
