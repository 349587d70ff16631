//! Device names (`cpu`, `cuda:N`, `xpu:N`) and the donor policy.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A place that can hold weights or run blocks.
///
/// Ordering: `Cpu` sorts before every `Cuda(_)`, which sort before every `Xpu(_)`; GPUs sort by
/// index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    Cpu,
    /// An NVIDIA GPU, run by ONNX Runtime's CUDA execution provider.
    Cuda(u32),
    /// An Intel GPU (ComfyUI's `xpu:N`), run by OpenVINO's GPU device through the OpenVINO
    /// plugin of ONNX Runtime; N counts the GPUs the plugin lists, in its order.
    Xpu(u32),
}

impl Device {
    /// A GPU of either kind: memory of its own, which the planner budgets.
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Cuda(_) | Device::Xpu(_))
    }

    /// Sort key used for listings: CUDA GPUs by index first, then Intel GPUs, then `cpu`.
    pub(crate) fn listing_key(self) -> (u8, u32) {
        match self {
            Device::Cuda(i) => (0, i),
            Device::Xpu(i) => (1, i),
            Device::Cpu => (2, 0),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Xpu(i) => write!(f, "xpu:{i}"),
        }
    }
}

const DEVICE_FORMS: &str = "valid forms are \"cpu\", \"cuda\" (= cuda:0), \"cuda:N\" with N a GPU index such as 0 or 1, and \"xpu:N\" for Intel GPU N (through OpenVINO)";

impl FromStr for Device {
    type Err = Error;

    /// Accepts `cpu`, `cuda`, `cuda:N`, `xpu`, `xpu:N`; case-insensitive, surrounding
    /// whitespace ignored.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => return Ok(Device::Cpu),
            "cuda" => return Ok(Device::Cuda(0)),
            "xpu" => return Ok(Device::Xpu(0)),
            _ => {}
        }
        let indexed = t
            .strip_prefix("cuda:")
            .map(|i| (i, Device::Cuda as fn(u32) -> Device))
            .or_else(|| {
                t.strip_prefix("xpu:")
                    .map(|i| (i, Device::Xpu as fn(u32) -> Device))
            });
        if let Some((idx, make)) = indexed {
            if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) {
                return idx.parse::<u32>().map(make).map_err(|_| {
                    Error::invalid(format!(
                        "device {s:?}: GPU index {idx:?} is too large; {DEVICE_FORMS}"
                    ))
                });
            }
            return Err(Error::invalid(format!(
                "device {s:?}: {idx:?} is not a GPU index; {DEVICE_FORMS}"
            )));
        }
        if t.is_empty() {
            return Err(Error::invalid(format!(
                "device {s:?} is empty; {DEVICE_FORMS}"
            )));
        }
        Err(Error::invalid(format!(
            "unknown device {s:?}; {DEVICE_FORMS}"
        )))
    }
}

impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What happens to a block homed on `cpu` while the compute device is a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DonorPolicy {
    /// Run it on the compute device, streaming its weights from host memory each pass (DisTorch's way).
    #[default]
    Stream,
    /// Run it on the CPU; only activations cross.
    Execute,
}

impl DonorPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DonorPolicy::Stream => "stream",
            DonorPolicy::Execute => "execute",
        }
    }
}

impl fmt::Display for DonorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DonorPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stream" => Ok(DonorPolicy::Stream),
            "execute" => Ok(DonorPolicy::Execute),
            _ => Err(Error::invalid(format!(
                "donor policy {s:?} is not valid; valid policies are \"stream\" and \"execute\""
            ))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DonorPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::error::deserialize_parsed(
            d,
            "a donor policy (\"stream\" or \"execute\")",
            "donor_policy",
        )
    }
}

impl serde::Serialize for DonorPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn parses_device_forms() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("  CPU ".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("CUDA:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!("\tcuda:12\n".parse::<Device>().unwrap(), Device::Cuda(12));
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert_eq!(Device::Cpu.to_string(), "cpu");
        assert_eq!("XPU:1".parse::<Device>().unwrap(), Device::Xpu(1));
        assert_eq!("xpu".parse::<Device>().unwrap(), Device::Xpu(0));
        assert_eq!(Device::Xpu(3).to_string(), "xpu:3");
        assert!(Device::Xpu(0).is_gpu() && Device::Cuda(0).is_gpu() && !Device::Cpu.is_gpu());
    }

    #[test]
    fn rejects_bad_devices_with_valid_forms() {
        for bad in [
            "",
            "gpu",
            "cuda:",
            "cuda:x",
            "cuda:-1",
            "cuda:+1",
            "cuda: 1",
            "cuda:1.0",
            "cuda:99999999999",
            "cpu0",
            "cuda0",
            "xpu:",
            "xpu:a",
            "xpu0",
        ] {
            let e = bad.parse::<Device>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message().contains(&format!("{bad:?}")), "{}", e.message());
            assert!(e.message().contains("cuda:N"), "{}", e.message());
        }
    }

    #[test]
    fn device_order() {
        assert!(Device::Cpu < Device::Cuda(0));
        assert!(Device::Cuda(0) < Device::Cuda(1));
        assert!(Device::Cuda(7) < Device::Xpu(0));
    }

    #[test]
    fn donor_policy() {
        assert_eq!(
            "Stream".parse::<DonorPolicy>().unwrap(),
            DonorPolicy::Stream
        );
        assert_eq!(
            " execute".parse::<DonorPolicy>().unwrap(),
            DonorPolicy::Execute
        );
        let e = "run".parse::<DonorPolicy>().unwrap_err();
        assert!(e.message().contains("\"run\"") && e.message().contains("execute"));
        assert_eq!(DonorPolicy::default(), DonorPolicy::Stream);
    }
}
