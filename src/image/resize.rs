//! PyTorch's antialiased bicubic and bilinear resampling on f32, reproduced term by term.
//!
//! `torch.nn.functional.interpolate(x, size, mode="bicubic" | "bilinear", antialias=True,
//! align_corners=False)` on a float CPU tensor runs `separable_upsample_generic_Nd_kernel_impl`
//! (aten/src/ATen/native/cpu/UpSampleKernel.cpp): a width pass, then a height pass, each
//! skipped when that axis keeps its size, with per-axis weights from
//! `_compute_indices_min_size_weights_aa` (`scalar_t = float`) and a sequential f32
//! multiply-accumulate starting from the first tap. The mixed float/double promotions of the
//! C++ source are reproduced here so that the weights are bit-identical.
//!
//! Fused multiply-adds: PyTorch's CPU kernels are compiled once per CPU capability, and the
//! AVX2/AVX-512 builds (GCC, `-mfma`, default `-ffp-contract=fast`) contract `a * b + c` into
//! one FMA, as clang does on ARM. Measured against torch 2.15 on x86-64, the weights and
//! outputs are bit-identical only with the same contractions, so they are reproduced with
//! `f32::mul_add` (exactly rounded everywhere; a hardware FMA where the CPU has one); see
//! [`plain_taps`] for the accumulation loop.

use std::ops::Range;

use crate::{Error, Result};

/// A zeroed f32 buffer, or an error instead of an abort when memory runs out.
pub(crate) fn try_zeroed(n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::invalid(format!("cannot allocate memory for {n} pixel values")))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// The interpolation filter of a resize: clip_preprocess's bicubic, or siglip2_preprocess's
/// bilinear (both antialiased, as `F.interpolate(..., antialias=True)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    Bicubic,
    Bilinear,
}

impl Filter {
    /// Half of PyTorch's `interp_size` (4 taps for bicubic, 2 for bilinear): the support of
    /// the filter at scale 1.
    fn half_size(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    #[inline]
    fn eval(self, x: f32) -> f32 {
        match self {
            Filter::Bicubic => keys_cubic(x),
            // `HelperInterpLinear::aa_filter`: the triangle 1 - |x| on [-1, 1].
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

/// Keys cubic convolution kernel with a = -0.5, evaluated in f32 as
/// `HelperInterpCubic::aa_filter<float>` / `cubic_convolution1/2` (UpSample.h) compiled with
/// FMA contraction:
/// `((A + 2) * x - (A + 3)) * x * x + 1` and `((A * x - 5A) * x + 8A) * x - 4A`.
#[inline]
fn keys_cubic(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        let t = (A + 2.0).mul_add(x, -(A + 3.0));
        (t * x).mul_add(x, 1.0)
    } else if x < 2.0 {
        let t = A.mul_add(x, -(5.0 * A));
        let t = t.mul_add(x, 8.0 * A);
        t.mul_add(x, -(4.0 * A))
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

/// Weights for resampling an axis of `in_size` samples to `out_size` samples with `filter`,
/// computed only for the output indices in `range` (the rest would be cropped away anyway; each
/// output depends only on its own weights, so this changes nothing in the values).
///
/// Callers guarantee `in_size >= 1`, `out_size >= 1` and `range.end <= out_size`.
pub(crate) fn axis_weights(
    filter: Filter,
    in_size: usize,
    out_size: usize,
    range: Range<usize>,
) -> AxisWeights {
    // area_pixel_compute_scale<float>(in, out, align_corners=false, no scale): float(in) / out.
    let scale: f32 = in_size as f32 / out_size as f32;
    // support = (scale >= 1.0) ? (interp_size * 0.5) * scale : interp_size * 0.5  (double -> float)
    let support: f32 = if scale >= 1.0 {
        (filter.half_size() * scale as f64) as f32
    } else {
        filter.half_size() as f32
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
            let v = filter.eval(x);
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

/// Resizes `src` to `out_h × out_w` with PyTorch's antialiased `filter` and returns only the
/// window `rows × cols` of the result, as HWC with 3 channels.
pub(crate) fn resize_window(
    filter: Filter,
    src: SrcView<'_>,
    out_h: usize,
    out_w: usize,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Result<Vec<f32>> {
    let (h, w, c) = (src.height, src.width, src.channels);
    let ch = src.channel_offsets();
    let ncols = cols.len();
    let nrows = rows.len();

    // Width pass (skipped by PyTorch when the width is unchanged): H × ncols × 3.
    let tmp_len = h
        .checked_mul(ncols * 3)
        .ok_or_else(|| Error::invalid("resize: size overflows"))?;
    let mut tmp = try_zeroed(tmp_len)?;
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
        let aw = axis_weights(filter, w, out_w, cols.clone());
        let pass = HPass {
            src: src.data,
            width: w,
            channels: c,
            ch,
            aw: &aw,
        };
        pass.run_best(&mut tmp);
    }

    // Height pass (skipped when the height is unchanged): nrows × ncols × 3.
    let row_len = ncols * 3;
    if out_h == h {
        tmp.truncate(rows.end * row_len);
        tmp.drain(..rows.start * row_len);
        return Ok(tmp);
    }
    let ah = axis_weights(filter, h, out_h, rows);
    let mut out = try_zeroed(nrows * row_len)?;
    let pass = VPass {
        tmp: &tmp,
        row_len,
        ah: &ah,
    };
    pass.run_best(&mut out);
    Ok(out)
}

/// How many of the taps after the first are accumulated as a separate multiply and add; the
/// rest are fused multiply-adds.
///
/// This mirrors the machine code of PyTorch's loop `output = t0 * w0; for j in 1..n
/// { output += t_j * w_j }` (`interpolate_aa_single_dim`): GCC vectorises it as an in-order
/// ("fold-left") reduction four lanes wide, whose products are plain multiplies added one by
/// one in order, and finishes the `(n - 1) % 4` remaining taps with scalar FMAs. Verified
/// bit for bit against torch 2.15 (AVX-512 kernels) for both passes and many sizes.
#[inline(always)]
fn plain_taps(rest: usize) -> usize {
    rest / 4 * 4
}

/// Gives a pass a `run_best` that uses hardware FMA when the CPU has it. The results are the
/// same either way (`mul_add` is exactly rounded); only the speed differs.
macro_rules! fma_dispatch {
    ($ty:ident) => {
        impl $ty<'_> {
            fn run_best(&self, out: &mut [f32]) {
                #[cfg(target_arch = "x86_64")]
                {
                    if std::is_x86_feature_detected!("fma") {
                        // SAFETY: the CPU supports FMA, checked just above.
                        unsafe { self.run_fma(out) };
                        return;
                    }
                }
                self.run(out)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "fma")]
            unsafe fn run_fma(&self, out: &mut [f32]) {
                self.run(out)
            }
        }
    };
}

fma_dispatch!(HPass);
fma_dispatch!(VPass);

/// The width pass: every row, every kept output column, three channels.
struct HPass<'a> {
    src: &'a [f32],
    width: usize,
    channels: usize,
    ch: [usize; 3],
    aw: &'a AxisWeights,
}

impl HPass<'_> {
    #[inline(always)]
    fn run(&self, tmp: &mut [f32]) {
        let (w, c) = (self.width, self.channels);
        let ncols = self.aw.xmin.len();
        if ncols == 0 {
            return;
        }
        for (srow, drow) in self
            .src
            .chunks_exact(w * c)
            .zip(tmp.chunks_exact_mut(ncols * 3))
        {
            for (k, dpx) in drow.chunks_exact_mut(3).enumerate() {
                let (xmin, wts) = self.aw.taps(k);
                let Some((&w0, rest)) = wts.split_first() else {
                    dpx.fill(0.0);
                    continue;
                };
                // The three channels side by side; each follows PyTorch's order exactly.
                let [o0, o1, o2] = self.ch;
                let px = &srow[xmin * c..(xmin + wts.len()) * c];
                let mut pixels = px.chunks_exact(c);
                let Some(p) = pixels.next() else {
                    dpx.fill(0.0);
                    continue;
                };
                let mut acc = [p[o0] * w0, p[o1] * w0, p[o2] * w0];
                let split = plain_taps(rest.len());
                let mut taps = pixels.zip(rest);
                for (p, &wj) in (&mut taps).take(split) {
                    acc[0] += p[o0] * wj;
                    acc[1] += p[o1] * wj;
                    acc[2] += p[o2] * wj;
                }
                for (p, &wj) in taps {
                    acc[0] = p[o0].mul_add(wj, acc[0]);
                    acc[1] = p[o1].mul_add(wj, acc[1]);
                    acc[2] = p[o2].mul_add(wj, acc[2]);
                }
                dpx.copy_from_slice(&acc);
            }
        }
    }
}

/// The height pass: every kept output row is a weighted sum of whole intermediate rows.
struct VPass<'a> {
    tmp: &'a [f32],
    row_len: usize,
    ah: &'a AxisWeights,
}

impl VPass<'_> {
    #[inline(always)]
    fn run(&self, out: &mut [f32]) {
        let row_len = self.row_len;
        if row_len == 0 {
            return;
        }
        for (r, dst) in out.chunks_exact_mut(row_len).enumerate() {
            let (ymin, wts) = self.ah.taps(r);
            if let Some((&w0, rest)) = wts.split_first() {
                let s0 = &self.tmp[ymin * row_len..(ymin + 1) * row_len];
                for (d, &s) in dst.iter_mut().zip(s0) {
                    *d = s * w0;
                }
                let split = plain_taps(rest.len());
                for (j, &wj) in rest.iter().enumerate() {
                    let y = ymin + 1 + j;
                    let s = &self.tmp[y * row_len..(y + 1) * row_len];
                    if j < split {
                        for (d, &v) in dst.iter_mut().zip(s) {
                            *d += v * wj;
                        }
                    } else {
                        for (d, &v) in dst.iter_mut().zip(s) {
                            *d = v.mul_add(wj, *d);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_weights_when_sizes_match() {
        let aw = axis_weights(Filter::Bicubic, 10, 10, 0..10);
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
        for filter in [Filter::Bicubic, Filter::Bilinear] {
            for (i, o) in [(97, 32), (20, 32), (1000, 224), (3, 224), (1, 5)] {
                let aw = axis_weights(filter, i, o, 0..o);
                for k in 0..o {
                    let (_, w) = aw.taps(k);
                    let s: f32 = w.iter().sum();
                    assert!((s - 1.0).abs() < 1e-5, "{filter:?} {i}->{o} at {k}: {s}");
                }
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
        for filter in [Filter::Bicubic, Filter::Bilinear] {
            let out = resize_window(filter, src, 32, 50, 0..32, 9..41).unwrap();
            assert_eq!(out.len(), 32 * 32 * 3);
            assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6));
        }
    }
}

#[cfg(test)]
mod bilinear_tests {
    use super::*;

    #[test]
    fn bilinear_halving_averages_pairs() {
        // Downscaling by 2 with the antialiased triangle: support 2, centre between two
        // samples, taps at ±0.5 and ±1.5 weighted 3/4 and 1/4 before normalising.
        let aw = axis_weights(Filter::Bilinear, 8, 4, 0..4);
        let (xmin, w) = aw.taps(1);
        assert_eq!(xmin, 1);
        assert_eq!(w, &[0.125, 0.375, 0.375, 0.125]);
        // Upscaling: plain linear interpolation between the two nearest samples.
        let aw = axis_weights(Filter::Bilinear, 4, 8, 0..8);
        let (xmin, w) = aw.taps(3);
        assert_eq!((xmin, w), (1, &[0.75f32, 0.25][..]));
    }
}
