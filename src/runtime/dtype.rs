//! Which compute dtype (`--dtype`) can run where: `fp32` (the default, contract §2.4's reference
//! pass) everywhere, `int8` on the CPU, `fp16` meant for CUDA.
//!
//! fp16 graphs also run on the CPU, where ONNX Runtime computes the ops it has no f16
//! kernel for in f32 behind inserted casts: slower than fp32 and no more accurate than
//! CUDA's f16, but it lets the fp16 graphs be checked on machines without a GPU. So it is
//! allowed there with a warning rather than refused.

use ort::session::builder::SessionBuilder;

use crate::plan::Device;
use crate::{Error, Result};

pub use crate::export::ComputeDtype;

/// Checks that `dtype` can run on the plan's exec devices; returns a warning to show, if any.
pub fn check(dtype: ComputeDtype, exec: &[Device]) -> Result<Option<String>> {
    let on_gpu = exec.iter().any(|d| d.is_gpu());
    match dtype {
        ComputeDtype::Fp32 => Ok(None),
        ComputeDtype::Int8 if on_gpu => Err(Error::invalid(
            "dtype: int8 runs on the CPU only; this plan runs blocks on a GPU (use `device=cpu`, or `dtype=fp32`)",
        )),
        ComputeDtype::Int8 => Ok(None),
        ComputeDtype::Fp16 if exec.contains(&Device::Cpu) => Ok(Some(
            "dtype: fp16 is meant for CUDA; on the CPU it runs (ONNX Runtime casts to f32 around ops without f16 kernels) but more slowly than fp32 and no more exactly, so use it there only to check results".into(),
        )),
        ComputeDtype::Fp16 => Ok(None),
    }
}

/// Session settings `dtype` needs. int8: ONNX Runtime's u8×s8 kernels for x86 CPUs without
/// VNNI (SSE4.1, AVX2, AVX-512 without VNNI) add pairs of products in saturating 16-bit
/// lanes (`vpmaddubsw`), which clips large activations (cosine 0.983 against fp32 on an
/// AVX2-only CPU). There `session.x64quantprecision` makes ONNX Runtime rewrite the weights to
/// u8 and use its exact u8×u8 kernels. VNNI CPUs do not need it and are not given it: ONNX
/// Runtime would rewrite their weights too, and u8×u8 ran int8 about 40 % slower on AVX-512
/// VNNI (README).
pub fn configure(builder: SessionBuilder, dtype: ComputeDtype) -> Result<SessionBuilder> {
    Ok(match dtype {
        ComputeDtype::Int8 if !u8s8_is_exact() => builder.with_precise_qmm()?,
        ComputeDtype::Int8 | ComputeDtype::Fp32 | ComputeDtype::Fp16 => builder,
    })
}

/// Whether ONNX Runtime's u8×s8 GEMM kernel on this CPU accumulates without saturating: the
/// same tests as its MLAS platform setup (VNNI with AVX-512 core, AVX-VNNI without it).
/// Non-x86 CPUs have no such kernels (the setting does nothing there).
pub fn u8s8_is_exact() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx512_core =
            has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
        if avx512_core {
            has!("avx512vnni")
        } else {
            has!("avx2") && has!("avxvnni")
        }
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_devices() {
        assert_eq!("FP32".parse::<ComputeDtype>().unwrap(), ComputeDtype::Fp32);
        assert_eq!("fp16".parse::<ComputeDtype>().unwrap(), ComputeDtype::Fp16);
        assert_eq!("int8".parse::<ComputeDtype>().unwrap(), ComputeDtype::Int8);
        assert!("int4".parse::<ComputeDtype>().is_err());
        assert_eq!(check(ComputeDtype::Int8, &[Device::Cpu]).unwrap(), None);
        assert!(check(ComputeDtype::Int8, &[Device::Cuda(0)]).is_err());
        assert_eq!(check(ComputeDtype::Fp32, &[Device::Cpu]).unwrap(), None);
        assert_eq!(check(ComputeDtype::Fp16, &[Device::Cuda(0)]).unwrap(), None);
        let w = check(ComputeDtype::Fp16, &[Device::Cuda(0), Device::Cpu]).unwrap();
        assert!(w.is_some_and(|w| w.contains("CUDA")));
    }
}
