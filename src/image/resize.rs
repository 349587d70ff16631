//! PyTorch's antialiased bicubic resampling on f32, reproduced term by term.
//!
//! `torch.nn.functional.interpolate(x, size, mode="bicubic", antialias=True,
//! align_corners=False)` on a float CPU tensor runs `separable_upsample_generic_Nd_kernel_impl`
//! (aten/src/ATen/native/cpu/UpSampleKernel.cpp): a width pass, then a height pass, each
//! skipped when that axis keeps its size, with per-axis weights from
//! `_compute_indices_min_size_weights_aa` (`scalar_t = float`) and a sequential f32
//! multiply-accumulate starting from the first tap. The mixed float/double promotions of the
//! C++ source are reproduced here so that the weights are bit-identical.

use std::ops::Range;

/// Keys cubic convolution kernel with a = -0.5, evaluated in f32 exactly as
/// `HelperInterpCubic::aa_filter<float>` / `cubic_convolution1/2` (UpSample.h).
#[inline]
fn keys_cubic(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// Resampling weights for one axis, for a contiguous range of output indices.
#[derive(Debug, Clone)]
pub(crate) struct AxisWeights {
    /// Per output index (relative to the range start): the first input index used.
    pub xmin: Vec<usize>,
    /// Per output index: how many input indices are used (may be 0 only in degenerate cases).
    pub xsize: Vec<usize>,
    /// Weights, `stride` per output index; the first `xsize[i]` are meaningful.
    pub weights: Vec<f32>,
    pub stride: usize,
}

impl AxisWeights {
    #[inline]
    pub fn taps(&self, i: usize) -> (usize, &[f32]) {
        let start = i * self.stride;
        (self.xmin[i], &self.weights[start..start + self.xsize[i]])
    }
}

/// Weights for resampling an axis of `in_size` samples to `out_size` samples, computed only for
/// the output indices in `range` (the rest would be cropped away anyway; each output depends only
/// on its own weights, so this changes nothing in the values).
///
/// Callers guarantee `in_size >= 1`, `out_size >= 1` and `range.end <= out_size`.
pub(crate) fn axis_weights(in_size: usize, out_size: usize, range: Range<usize>) -> AxisWeights {
    // area_pixel_compute_scale<float>(in, out, align_corners=false, no scale): float(in) / out.
    let scale: f32 = in_size as f32 / out_size as f32;
    // support = (scale >= 1.0) ? (interp_size * 0.5) * scale : interp_size * 0.5  (double -> float)
    let support: f32 = if scale >= 1.0 {
        (2.0f64 * scale as f64) as f32
    } else {
        2.0
    };
    let max_interp = (support.ceil() as usize) * 2 + 1;
    // invscale = (scale >= 1.0) ? 1.0 / scale : 1.0  (double division, stored as float)
    let invscale: f32 = if scale >= 1.0 {
        (1.0f64 / scale as f64) as f32
    } else {
        1.0
    };
    let n = range.len();
    let mut xmin_v = Vec::with_capacity(n);
    let mut xsize_v = Vec::with_capacity(n);
    let mut weights = vec![0.0f32; n * max_interp];
    let in_i = in_size as i64;
    for (k, i) in range.enumerate() {
        // center = scale * (i + 0.5): float * double -> double, stored as float.
        let center: f32 = (scale as f64 * (i as f64 + 0.5)) as f32;
        // (center - support) in float, + 0.5 in double, truncated to int64.
        let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
        let xmax = (((center + support) as f64 + 0.5) as i64).min(in_i);
        let xsize = (xmax - xmin).clamp(0, max_interp as i64);
        let xmin = xmin.min(in_i);
        let xsize = xsize.min(in_i - xmin).max(0) as usize;
        let w = &mut weights[k * max_interp..k * max_interp + xsize];
        let mut total: f32 = 0.0;
        for (j, wj) in w.iter_mut().enumerate() {
            // (j + xmin - center + 0.5) * invscale: int64 - float in float, then double.
            let pos = (j as i64 + xmin) as f32 - center;
            let x = ((pos as f64 + 0.5) * invscale as f64) as f32;
            let v = keys_cubic(x);
            *wj = v;
            total += v;
        }
        if total != 0.0 {
            for wj in w.iter_mut() {
                *wj /= total;
            }
        }
        xmin_v.push(xmin as usize);
        xsize_v.push(xsize);
    }
    AxisWeights {
        xmin: xmin_v,
        xsize: xsize_v,
        weights,
        stride: max_interp,
    }
}

/// A borrowed H×W image with `channels` interleaved f32 channels (1, 3 or more; only the
/// first three are read, and a single channel is read as grey for all three).
#[derive(Clone, Copy)]
pub(crate) struct SrcView<'a> {
    pub data: &'a [f32],
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl SrcView<'_> {
    #[inline]
    fn channel_offsets(&self) -> [usize; 3] {
        if self.channels >= 3 {
            [0, 1, 2]
        } else {
            [0, 0, 0]
        }
    }
}

/// Resizes `src` to `out_h × out_w` with PyTorch's antialiased bicubic and returns only the
/// window `rows × cols` of the result, as HWC with 3 channels.
pub(crate) fn resize_window(
    src: SrcView<'_>,
    out_h: usize,
    out_w: usize,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Vec<f32> {
    let (h, w, c) = (src.height, src.width, src.channels);
    let ch = src.channel_offsets();
    let ncols = cols.len();
    let nrows = rows.len();

    // Width pass (skipped by PyTorch when the width is unchanged): H × ncols × 3.
    let mut tmp = vec![0.0f32; h * ncols * 3];
    if out_w == w {
        for y in 0..h {
            let srow = &src.data[y * w * c..(y + 1) * w * c];
            let drow = &mut tmp[y * ncols * 3..(y + 1) * ncols * 3];
            for (k, x) in cols.clone().enumerate() {
                for (o, &off) in ch.iter().enumerate() {
                    drow[k * 3 + o] = srow[x * c + off];
                }
            }
        }
    } else {
        let aw = axis_weights(w, out_w, cols.clone());
        for y in 0..h {
            let srow = &src.data[y * w * c..(y + 1) * w * c];
            let drow = &mut tmp[y * ncols * 3..(y + 1) * ncols * 3];
            for k in 0..ncols {
                let (xmin, wts) = aw.taps(k);
                for (o, &off) in ch.iter().enumerate() {
                    drow[k * 3 + o] = match wts.split_first() {
                        Some((&w0, rest)) => {
                            let mut acc = srow[xmin * c + off] * w0;
                            for (j, &wj) in rest.iter().enumerate() {
                                acc += srow[(xmin + 1 + j) * c + off] * wj;
                            }
                            acc
                        }
                        None => 0.0,
                    };
                }
            }
        }
    }

    // Height pass (skipped when the height is unchanged): nrows × ncols × 3.
    let row_len = ncols * 3;
    if out_h == h {
        return tmp[rows.start * row_len..rows.end * row_len].to_vec();
    }
    let ah = axis_weights(h, out_h, rows);
    let mut out = vec![0.0f32; nrows * row_len];
    for r in 0..nrows {
        let (ymin, wts) = ah.taps(r);
        let dst = &mut out[r * row_len..(r + 1) * row_len];
        if let Some((&w0, rest)) = wts.split_first() {
            let s0 = &tmp[ymin * row_len..(ymin + 1) * row_len];
            for (d, &s) in dst.iter_mut().zip(s0) {
                *d = s * w0;
            }
            for (j, &wj) in rest.iter().enumerate() {
                let y = ymin + 1 + j;
                let s = &tmp[y * row_len..(y + 1) * row_len];
                for (d, &v) in dst.iter_mut().zip(s) {
                    *d += v * wj;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_weights_when_sizes_match() {
        let aw = axis_weights(10, 10, 0..10);
        for i in 0..10 {
            let (xmin, w) = aw.taps(i);
            for (j, &v) in w.iter().enumerate() {
                let expect = if xmin + j == i { 1.0 } else { 0.0 };
                assert_eq!(v, expect);
            }
        }
    }

    #[test]
    fn weights_sum_to_one() {
        for (i, o) in [(97, 32), (20, 32), (1000, 224), (3, 224), (1, 5)] {
            let aw = axis_weights(i, o, 0..o);
            for k in 0..o {
                let (_, w) = aw.taps(k);
                let s: f32 = w.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{i}->{o} at {k}: {s}");
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let data = vec![0.25f32; 7 * 11 * 3];
        let src = SrcView {
            data: &data,
            height: 7,
            width: 11,
            channels: 3,
        };
        let out = resize_window(src, 32, 50, 0..32, 9..41);
        assert_eq!(out.len(), 32 * 32 * 3);
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
    }
}
