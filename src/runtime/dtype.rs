//! Which compute dtype (`--dtype`) can run where: `fp32` (the default, contract §2.4's reference
//! pass) everywhere, `int8` on the CPU, `fp16` meant for CUDA, `bf16` on OpenVINO's CPU device
//! on CPUs with AMX or AVX512_BF16 (contract §6.4).
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
/// (Which CPU engine a dtype needs is the engine resolution's check, `runtime::engine`.)
pub fn check(dtype: ComputeDtype, exec: &[Device]) -> Result<Option<String>> {
    let on_gpu = exec.iter().any(|d| d.is_gpu());
    match dtype {
        ComputeDtype::Fp32 => Ok(None),
        ComputeDtype::Int8 if on_gpu => Err(Error::invalid(
            "dtype: int8 runs on the CPU only; this plan runs blocks on a GPU (use `device=cpu`, or `dtype=fp32`)",
        )),
        ComputeDtype::Bf16 if on_gpu => Err(Error::invalid(
            "dtype: bf16 runs on OpenVINO's CPU device only; this plan runs blocks on a GPU (use `device=cpu`, or `dtype=fp32`, or `dtype=fp16` on a GPU)",
        )),
        ComputeDtype::Bf16 => bf16_cpu().map(|_| None),
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
        ComputeDtype::Int8 | ComputeDtype::Fp32 | ComputeDtype::Fp16 | ComputeDtype::Bf16 => {
            builder
        }
    })
}

/// The CPU's bf16 unit OpenVINO computes `bf16` with (`"AMX"` or `"AVX512_BF16"`), or an error
/// naming what is missing and the dtypes that work here. Read from CPUID (and the OS's saved
/// register state), so an emulated CPU (`qemu-x86_64 -cpu ...`) answers for itself.
pub fn bf16_cpu() -> Result<&'static str> {
    let (amx, avx512_bf16) = bf16_units();
    if amx {
        return Ok("AMX");
    }
    if avx512_bf16 {
        return Ok("AVX512_BF16");
    }
    Err(Error::invalid(
        "dtype: bf16 needs a CPU with AMX (AMX-BF16) or AVX512_BF16, which OpenVINO computes bf16 with; this CPU has neither (dtypes that work here: fp32, the reference; int8, approximate and faster)",
    ))
}

/// (AMX-BF16 usable, AVX512_BF16 usable) on this CPU.
#[allow(unused_unsafe)] // CPUID is unsafe before Rust 1.87 (rust-version)
fn bf16_units() -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        // SAFETY: CPUID exists on every x86-64 CPU; leaves above the maximum read as zero
        // here because they are only read when the maximum allows.
        let max = unsafe { __cpuid_count(0, 0) }.eax;
        if max < 7 {
            return (false, false);
        }
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        let avx512_bf16 = leaf7.eax >= 1
            && unsafe { __cpuid_count(7, 1) }.eax & (1 << 5) != 0
            && std::arch::is_x86_feature_detected!("avx512f");
        let amx_cpu = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
        (amx_cpu && os_saves_amx_tiles(), avx512_bf16)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (false, false)
    }
}

/// Whether the OS has enabled the AMX tile state (XCR0 bits 17 and 18).
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
fn os_saves_amx_tiles() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // SAFETY: leaf 1 always exists; XGETBV is only executed when OSXSAVE says it may be.
    let osxsave = unsafe { __cpuid_count(1, 0) }.ecx & (1 << 27) != 0;
    if !osxsave {
        return false;
    }
    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        std::arch::x86_64::_xgetbv(0)
    }
    let xcr0 = unsafe { xcr0() };
    xcr0 & (0b11 << 17) == (0b11 << 17)
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
        assert_eq!("BF16".parse::<ComputeDtype>().unwrap(), ComputeDtype::Bf16);
        assert_eq!(ComputeDtype::Bf16.graphs(), ComputeDtype::Fp32);
        let e = check(ComputeDtype::Bf16, &[Device::Xpu(0)]).unwrap_err();
        assert!(e.message().contains("bf16") && e.message().contains("CPU"));
        assert!(check(ComputeDtype::Bf16, &[Device::Cuda(0)]).is_err());
    }

    #[test]
    fn bf16_on_the_cpu_follows_the_cpus_units() {
        // The answer depends on this CPU; the message does not.
        match bf16_cpu() {
            Ok(unit) => {
                assert!(unit == "AMX" || unit == "AVX512_BF16");
                assert_eq!(check(ComputeDtype::Bf16, &[Device::Cpu]).unwrap(), None);
            }
            Err(e) => {
                let m = e.message();
                assert!(
                    m.contains("AMX") && m.contains("AVX512_BF16") && m.contains("fp32"),
                    "{m}"
                );
            }
        }
    }
}
