//! Which devices exist and how much memory each has: from the CUDA driver and
//! `/proc/meminfo` (and Intel GPUs from the OpenVINO plugin, which the loader adds with
//! [`Inventory::add_xpu`]), or simulated from a string.

use std::collections::HashSet;
use std::fmt::Write as _;

use super::device::Device;
use super::units::{format_bytes, parse_bytes};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    pub device: Device,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// GPUs by index, then `cpu`.
    pub devices: Vec<DeviceInfo>,
    /// True when built by [`Inventory::simulate`].
    pub simulated: bool,
    /// The devices whose figures came from the simulation string (not from this machine).
    pub simulated_devices: Vec<Device>,
    /// Intel GPUs that exist but whose memory the OpenVINO plugin does not report, with their
    /// names: the planner has no budget for them until one is given.
    pub unmeasured: Vec<(Device, String)>,
}

const SIMULATE_FORMS: &str = "write comma-separated entries \"device=total\" or \"device=total/free\" with binary units, e.g. \"cuda:0=24GiB,cuda:1=12GiB/10GiB,cpu=64GiB\" (cpu is taken from this machine when not given)";

impl Inventory {
    /// The machine's devices: GPUs through the CUDA driver (none when there is no driver or it
    /// fails; never panics), and `cpu` from `/proc/meminfo` (MemAvailable as free).
    pub fn detect() -> Inventory {
        let mut devices = detect_gpus();
        devices.push(detect_cpu());
        Inventory {
            devices,
            simulated: false,
            simulated_devices: Vec::new(),
            unmeasured: Vec::new(),
        }
    }

    /// A simulated inventory, e.g. `cuda:0=24GiB,cuda:1=12GiB/10GiB,cpu=64GiB` (total[/free]).
    /// When `cpu` is not given it is taken from this machine.
    pub fn simulate(spec: &str) -> Result<Inventory> {
        let compact: String = spec.chars().filter(|c| !c.is_whitespace()).collect();
        if compact.is_empty() {
            return Err(Error::invalid(format!(
                "device simulation {spec:?} is empty; {SIMULATE_FORMS}"
            )));
        }
        let mut pieces: Vec<&str> = spec.split(',').collect();
        if pieces.len() > 1 && pieces.last().is_some_and(|p| p.trim().is_empty()) {
            pieces.pop();
        }
        let mut devices = Vec::new();
        let mut seen = HashSet::new();
        for piece in pieces {
            let text = piece.trim();
            let entry: String = piece.chars().filter(|c| !c.is_whitespace()).collect();
            if entry.is_empty() {
                return Err(Error::invalid(format!(
                    "device simulation {spec:?} has an empty entry; {SIMULATE_FORMS}"
                )));
            }
            let Some((dev, sizes)) = entry.split_once('=') else {
                return Err(Error::invalid(format!(
                    "device simulation entry {text:?} has no '='; {SIMULATE_FORMS}"
                )));
            };
            let ctx = |e: Error| {
                Error::invalid(format!("device simulation entry {text:?}: {}", e.message()))
            };
            let device: Device = dev.parse().map_err(ctx)?;
            if !seen.insert(device) {
                return Err(Error::invalid(format!(
                    "device simulation entry {text:?} lists {device} a second time; each device may appear once"
                )));
            }
            let (total_text, free_text) = match sizes.split_once('/') {
                Some((t, f)) => (t, Some(f)),
                None => (sizes, None),
            };
            let total = parse_bytes(total_text).map_err(ctx)?;
            if total == 0 {
                return Err(Error::invalid(format!(
                    "device simulation entry {text:?}: total memory must be above 0; {SIMULATE_FORMS}"
                )));
            }
            let free = match free_text {
                Some(f) => parse_bytes(f).map_err(ctx)?,
                None => total,
            };
            if free > total {
                return Err(Error::invalid(format!(
                    "device simulation entry {text:?}: free memory {} is more than total {}; free must be <= total",
                    format_bytes(free),
                    format_bytes(total)
                )));
            }
            let name = match device {
                Device::Cpu => "simulated CPU".to_string(),
                Device::Cuda(i) => format!("simulated GPU {i}"),
                Device::Xpu(i) => format!("simulated Intel GPU {i}"),
            };
            devices.push(DeviceInfo {
                device,
                name,
                total_bytes: total,
                free_bytes: free,
            });
        }
        let mut simulated_devices: Vec<Device> = devices.iter().map(|d| d.device).collect();
        simulated_devices.sort_by_key(|d| d.listing_key());
        if !seen.contains(&Device::Cpu) {
            devices.push(detect_cpu());
        }
        devices.sort_by_key(|d| d.device.listing_key());
        Ok(Inventory {
            devices,
            simulated: true,
            simulated_devices,
            unmeasured: Vec::new(),
        })
    }

    /// Adds Intel GPU `n` as the OpenVINO plugin lists it: with its memory (free is taken as
    /// total: OpenVINO reports no free memory), or, when the plugin reports none, as a device
    /// that needs a budget.
    pub fn add_xpu(&mut self, n: u32, name: &str, total_bytes: Option<u64>) {
        let device = Device::Xpu(n);
        if self.get(device).is_some() {
            return;
        }
        match total_bytes {
            Some(total) => {
                self.devices.push(DeviceInfo {
                    device,
                    name: name.to_string(),
                    total_bytes: total,
                    free_bytes: total,
                });
                self.devices.sort_by_key(|d| d.device.listing_key());
            }
            None => self.unmeasured.push((device, name.to_string())),
        }
    }

    /// Takes `bytes` this process already holds on `d` off its free memory, for a simulated
    /// device only: a real device's free memory already reflects them.
    pub fn hold(&mut self, d: Device, bytes: u64) {
        if !self.simulated_devices.contains(&d) {
            return;
        }
        if let Some(info) = self.devices.iter_mut().find(|i| i.device == d) {
            info.free_bytes = info.free_bytes.saturating_sub(bytes);
        }
    }

    pub fn get(&self, d: Device) -> Option<&DeviceInfo> {
        self.devices.iter().find(|i| i.device == d)
    }

    pub fn has_gpu(&self) -> bool {
        self.devices.iter().any(|i| i.device.is_gpu())
    }

    /// The devices' names joined for messages: `cuda:0, cuda:1, cpu`.
    pub fn device_list(&self) -> String {
        if self.devices.is_empty() {
            return "(none)".to_string();
        }
        self.devices
            .iter()
            .map(|d| d.device.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Looks a device up, or fails with `NotFound` naming the field and the available devices
    /// (`InvalidArgument` asking for a budget when it exists with no known memory).
    pub fn require(&self, d: Device, field: &str) -> Result<&DeviceInfo> {
        if let Some((_, name)) = self.unmeasured.iter().find(|(u, _)| *u == d) {
            return Err(Error::invalid(format!(
                "{field}: {d} ({name}) has no memory size: the OpenVINO plugin reports none for it, so the planner has no budget for it; give its memory with `simulate_devices=\"{d}=16GiB\"` (a command-line and YAML option; write its real size)"
            )));
        }
        self.get(d).ok_or_else(|| {
            Error::new(
                crate::ErrorKind::NotFound,
                format!(
                    "{field}: device {:?} does not exist{}; available devices are {}{}",
                    d.to_string(),
                    if self.simulated {
                        " in the simulated inventory"
                    } else {
                        " on this machine"
                    },
                    self.device_list(),
                    match d {
                        Device::Xpu(_) if !self.simulated => " (xpu:N are the Intel GPUs the OpenVINO plugin lists: see `distorch-vision devices`)",
                        _ => "",
                    }
                ),
            )
        })
    }

    /// `[{"device","name","total_bytes","free_bytes"}]`
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.devices
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "device": d.device.to_string(),
                        "name": d.name,
                        "total_bytes": d.total_bytes,
                        "free_bytes": d.free_bytes,
                    })
                })
                .collect(),
        )
    }

    pub fn render_table(&self) -> String {
        let mut out = String::new();
        if self.simulated {
            out.push_str("(simulated devices)\n");
        }
        let name_w = self
            .devices
            .iter()
            .map(|d| d.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        let _ = writeln!(
            out,
            "{:<8}  {:<name_w$}  {:>12}  {:>12}",
            "device", "name", "total", "free"
        );
        for d in &self.devices {
            let _ = writeln!(
                out,
                "{:<8}  {:<name_w$}  {:>12}  {:>12}",
                d.device.to_string(),
                d.name,
                format_bytes(d.total_bytes),
                format_bytes(d.free_bytes)
            );
        }
        out
    }
}

/// Parses `/proc/meminfo` text: (MemTotal, MemAvailable) in bytes.
pub(crate) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let rest = line[key.len()..].trim_start_matches(':').trim();
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some(u) if u.eq_ignore_ascii_case("kb") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:").or_else(|| field("MemFree:"))?;
    Some((total, avail.min(total)))
}

fn cpu_model_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    let name = line.split_once(':')?.1.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn detect_cpu() -> DeviceInfo {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t));
    let (total, free, name) = match mem {
        Some((t, f)) => (
            t,
            f,
            cpu_model_name().unwrap_or_else(|| "system memory".into()),
        ),
        None => (
            0,
            0,
            "system memory (unknown: /proc/meminfo unreadable)".into(),
        ),
    };
    DeviceInfo {
        device: Device::Cpu,
        name,
        total_bytes: total,
        free_bytes: free,
    }
}

/// The GPUs the CUDA driver reports (through the runtime's one driver probe).
fn detect_gpus() -> Vec<DeviceInfo> {
    crate::runtime::gpu::driver::gpus()
        .into_iter()
        .map(|g| DeviceInfo {
            device: Device::Cuda(g.index),
            name: g.name,
            total_bytes: g.total_bytes,
            free_bytes: g.free_bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const G: u64 = 1 << 30;

    #[test]
    fn simulate_forms() {
        let inv = Inventory::simulate("cuda:0=24GiB, cuda:1=12GiB/10GiB ,cpu=64GiB").unwrap();
        assert!(inv.simulated);
        assert!(inv.has_gpu());
        let devs: Vec<_> = inv.devices.iter().map(|d| d.device).collect();
        assert_eq!(devs, vec![Device::Cuda(0), Device::Cuda(1), Device::Cpu]);
        let c1 = inv.get(Device::Cuda(1)).unwrap();
        assert_eq!((c1.total_bytes, c1.free_bytes), (12 * G, 10 * G));
        let c0 = inv.get(Device::Cuda(0)).unwrap();
        assert_eq!((c0.total_bytes, c0.free_bytes), (24 * G, 24 * G));
        assert_eq!(inv.get(Device::Cpu).unwrap().total_bytes, 64 * G);
        assert!(inv.get(Device::Cuda(2)).is_none());

        // sorted, case-insensitive, trailing comma, cpu taken from the machine
        let inv = Inventory::simulate("CUDA:1=8g,cuda:0=4gb,").unwrap();
        let devs: Vec<_> = inv.devices.iter().map(|d| d.device).collect();
        assert_eq!(devs, vec![Device::Cuda(0), Device::Cuda(1), Device::Cpu]);
        // The machine's CPU entry: same total; free memory is read twice and moves between reads.
        let (cpu, machine) = (inv.get(Device::Cpu).unwrap(), detect_cpu());
        assert_eq!(
            (cpu.device, &cpu.name, cpu.total_bytes),
            (machine.device, &machine.name, machine.total_bytes)
        );
        assert!(cpu.free_bytes <= cpu.total_bytes);

        let inv = Inventory::simulate("cpu=16gb").unwrap();
        assert!(!inv.has_gpu());
        assert_eq!(inv.devices.len(), 1);
    }

    #[test]
    fn simulate_errors() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "\"\"", "empty"),
            ("cuda:0=4gb,,cpu=4gb", "cuda:0=4gb,,cpu=4gb", "empty entry"),
            ("cuda:0", "\"cuda:0\"", "no '='"),
            ("gpu=4gb", "\"gpu=4gb\"", "cuda:N"),
            ("cuda:0=4", "\"cuda:0=4\"", "no unit"),
            (
                "cuda:0=4gb/8gb",
                "\"cuda:0=4gb/8gb\"",
                "free must be <= total",
            ),
            ("cuda:0=0gb", "\"cuda:0=0gb\"", "above 0"),
            ("cuda:0=4gb,cuda:0=4gb", "\"cuda:0=4gb\"", "second time"),
            ("cuda:0=4gb/", "\"cuda:0=4gb/\"", "empty"),
            ("cuda:0=-4gb", "\"cuda:0=-4gb\"", "negative"),
        ];
        for (input, quoted, why) in cases {
            let e = Inventory::simulate(input).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let m = e.message();
            assert!(m.contains(quoted) && m.contains(why), "{input:?}: {m:?}");
        }
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16318712 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some((16318712 * 1024, 12000000 * 1024))
        );
        assert_eq!(
            parse_meminfo("MemTotal: 10 kB\nMemFree: 5 kB\n"),
            Some((10240, 5120))
        );
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn detect_never_panics_and_has_cpu() {
        let a = Inventory::detect();
        let b = Inventory::detect();
        assert!(!a.simulated);
        assert!(a.get(Device::Cpu).is_some());
        assert_eq!(a.devices.len(), b.devices.len());
        assert!(a.devices.last().is_some_and(|d| d.device == Device::Cpu));
    }

    #[test]
    fn json_and_table() {
        let inv = Inventory::simulate("cuda:0=24GiB/20GiB,cpu=64GiB").unwrap();
        let j = inv.to_json();
        assert_eq!(j[0]["device"], "cuda:0");
        assert_eq!(j[0]["total_bytes"], 24 * G);
        assert_eq!(j[0]["free_bytes"], 20 * G);
        assert_eq!(j[1]["device"], "cpu");
        assert_eq!(j[1]["name"], "simulated CPU");
        let t = inv.render_table();
        assert!(t.contains("cuda:0") && t.contains("24.00 GiB") && t.contains("20.00 GiB"));
    }

    #[test]
    fn intel_gpus_from_the_plugin_with_and_without_memory() {
        let mut inv = Inventory::simulate("cpu=64GiB").unwrap();
        inv.add_xpu(0, "Intel(R) Arc(TM) A770", Some(16 * G));
        inv.add_xpu(1, "Intel(R) Graphics", None);
        let devs: Vec<_> = inv.devices.iter().map(|d| d.device).collect();
        assert_eq!(devs, vec![Device::Xpu(0), Device::Cpu]);
        assert_eq!(
            inv.require(Device::Xpu(0), "device").unwrap().free_bytes,
            16 * G
        );
        let e = inv.require(Device::Xpu(1), "device").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let m = e.message();
        assert!(
            m.contains("xpu:1")
                && m.contains("Intel(R) Graphics")
                && m.contains("`simulate_devices=\"xpu:1="),
            "{m}"
        );
        // Simulated Intel GPUs take their memory from the string.
        let inv = Inventory::simulate("xpu:0=16GiB").unwrap();
        assert_eq!(
            inv.get(Device::Xpu(0)).unwrap().name,
            "simulated Intel GPU 0"
        );
        assert!(inv.get(Device::Cpu).is_some());
    }

    #[test]
    fn require_lists_devices() {
        let inv = Inventory::simulate("cuda:0=24GiB,cpu=64GiB").unwrap();
        let e = inv.require(Device::Cuda(3), "donor_device").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("\"cuda:3\""));
        assert!(e.message().contains("cuda:0, cpu"));
        assert!(e.message().contains("donor_device"));
    }
}
