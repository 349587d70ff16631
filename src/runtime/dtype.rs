//! Which compute dtype (`--dtype`) can run where: `fp32` (the default, SPEC §2.4's reference
//! pass) everywhere, `int8` on the CPU, `fp16` (reduced precision on CUDA, an explicit opt-in).
//!
//! fp16 is NOT implemented yet: it needs an fp16 variant of the block graphs (weights and
//! activations cast to f16, LayerNorm/softmax kept in f32), which belongs in `src/export/`.
//! Asking for it fails with a clear message on every device rather than silently running fp32.

use crate::plan::Device;
use crate::{Error, Result};

pub use crate::export::ComputeDtype;

/// Checks that `dtype` can run on the plan's exec devices.
pub fn check(dtype: ComputeDtype, exec: &[Device]) -> Result<()> {
    match dtype {
        ComputeDtype::Fp32 => Ok(()),
        ComputeDtype::Int8 if exec.iter().any(|d| d.is_gpu()) => Err(Error::invalid(
            "dtype: int8 runs on the CPU only; this plan runs blocks on a GPU (use --device cpu, or --dtype fp32)",
        )),
        ComputeDtype::Int8 => Ok(()),
        ComputeDtype::Fp16 if !exec.iter().any(|d| d.is_gpu()) => Err(Error::invalid(
            "dtype: fp16 compute is only offered on CUDA devices; this plan runs on the CPU (use --dtype fp32)",
        )),
        ComputeDtype::Fp16 => Err(Error::invalid(
            "dtype: fp16 compute on CUDA is not implemented yet (it needs an fp16 graph variant); use --dtype fp32",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_fp16() {
        assert_eq!("FP32".parse::<ComputeDtype>().unwrap(), ComputeDtype::Fp32);
        assert_eq!("fp16".parse::<ComputeDtype>().unwrap(), ComputeDtype::Fp16);
        assert_eq!("int8".parse::<ComputeDtype>().unwrap(), ComputeDtype::Int8);
        assert!("int4".parse::<ComputeDtype>().is_err());
        assert!(check(ComputeDtype::Int8, &[Device::Cpu]).is_ok());
        assert!(check(ComputeDtype::Int8, &[Device::Cuda(0)]).is_err());
        assert!(check(ComputeDtype::Fp32, &[Device::Cpu]).is_ok());
        let e = check(ComputeDtype::Fp16, &[Device::Cpu]).unwrap_err();
        assert!(e.to_string().contains("CUDA"), "{e}");
        let e = check(ComputeDtype::Fp16, &[Device::Cuda(0)]).unwrap_err();
        assert!(e.to_string().contains("not implemented"), "{e}");
    }
}
