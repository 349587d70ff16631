//! What one pass of the runner feeds the blocks, for both runners: square pixels go to the
//! embed block as they are; a naflex batch is cut to its largest grid (images with fewer
//! patches padded, contract §3.1), goes in with its grids, and every later block gets the key
//! mask that keeps the padding out of attention. Token outputs come back padded to the
//! model's `num_patches` with zero rows after each image's own patches, so batches of any mix
//! of grids join into one tensor.

use ndarray::{s, Array2, Array3, ArrayD, Axis};
use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor, TensorRef};

use crate::image::naflex::spatial_shapes;
use crate::image::{Grid, PixelsView};
use crate::Result;

/// The inputs of one pass.
pub struct PassInput<'a> {
    /// The embed block's inputs, in its graph's order.
    pub embed: Vec<SessionInputValue<'a>>,
    /// naflex: the key mask `[B, T]` every later block takes.
    pub mask: Option<DynValue>,
    /// naflex: each image's grid, to pad the token outputs with.
    pub grids: Option<Vec<Grid>>,
}

impl<'a> PassInput<'a> {
    /// The inputs for `px`. Square pixels are handed over in place when contiguous (a batch
    /// chunk is); naflex patches are copied, cut to the chunk's largest grid.
    pub fn new(px: PixelsView<'a>) -> Result<PassInput<'a>> {
        match px {
            PixelsView::Square(a) => {
                let input = match a.as_slice() {
                    Some(_) => SessionInputValue::from(TensorRef::from_array_view(a)?),
                    None => SessionInputValue::from(Tensor::from_array(a.to_owned())?.into_dyn()),
                };
                Ok(PassInput {
                    embed: vec![input],
                    mask: None,
                    grids: None,
                })
            }
            PixelsView::Patches { values, grids } => {
                let t = grids.iter().map(|g| g.patches()).max().unwrap_or(1).max(1);
                let patches: Array3<f32> = values.slice(s![.., ..t, ..]).to_owned();
                let b = grids.len();
                let shapes = Tensor::from_array(([b, 2], spatial_shapes(grids)))?;
                let mask =
                    Array2::from_shape_fn((b, t), |(i, j)| i32::from(j < grids[i].patches()));
                Ok(PassInput {
                    embed: vec![
                        SessionInputValue::from(Tensor::from_array(patches)?.into_dyn()),
                        SessionInputValue::from(shapes.into_dyn()),
                    ],
                    mask: Some(Tensor::from_array(mask)?.into_dyn()),
                    grids: Some(grids.to_vec()),
                })
            }
        }
    }
}

/// A naflex token output (`[B, T, D]`, or `[B, L, T, D]` for `all_hidden_states`) padded to
/// `n` tokens, every row after an image's own patches zero; others (`[B, D]`) as they are.
pub fn pad_tokens(t: ArrayD<f32>, grids: &[Grid], n: usize) -> ArrayD<f32> {
    let rank = t.ndim();
    if rank < 3 {
        return t;
    }
    let axis = rank - 2;
    let mut shape = t.shape().to_vec();
    let have = shape[axis];
    shape[axis] = n;
    let mut out = ArrayD::<f32>::zeros(shape);
    for (i, (src, mut dst)) in t
        .axis_iter(Axis(0))
        .zip(out.axis_iter_mut(Axis(0)))
        .enumerate()
    {
        let valid = grids.get(i).map_or(0, |g| g.patches()).min(have).min(n);
        let tok = Axis(axis - 1);
        dst.slice_axis_mut(tok, (0..valid).into())
            .assign(&src.slice_axis(tok, (0..valid).into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_outputs_are_padded_with_zeros_after_each_grid() {
        // Two images of 2 and 3 patches, run together at 3 tokens; the model's maximum is 4.
        let t = ArrayD::from_shape_vec(vec![2, 3, 1], vec![1., 2., 9., 4., 5., 6.]).unwrap();
        let grids = [Grid::new(1, 2), Grid::new(3, 1)];
        let p = pad_tokens(t, &grids, 4);
        assert_eq!(p.shape(), &[2, 4, 1]);
        assert_eq!(
            p.iter().copied().collect::<Vec<_>>(),
            [1., 2., 0., 0., 4., 5., 6., 0.]
        );
        // [B, L, T, D]: the token axis is the second to last.
        let all = ArrayD::from_elem(vec![2, 2, 3, 1], 7.0);
        let p = pad_tokens(all, &grids, 4);
        assert_eq!(p.shape(), &[2, 2, 4, 1]);
        assert_eq!(p[[0, 1, 1, 0]], 7.0);
        assert_eq!(p[[0, 1, 2, 0]], 0.0);
        assert_eq!(p[[1, 0, 2, 0]], 7.0);
        // Pooled outputs are untouched.
        let pooled = ArrayD::from_elem(vec![2, 5], 1.0);
        assert_eq!(pad_tokens(pooled, &grids, 4).shape(), &[2, 5]);
    }
}
