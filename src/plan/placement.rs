//! The DisTorch2 placement (contract §5.3): which device holds each block's weights (home) and
//! which runs it (exec), and the fit check.
//!
//! [`plan`] runs the steps in order: check the options and resolve the devices, choose homes
//! (`homes`: from the allocation string, or from virtual VRAM), derive exec devices, check the
//! fit (`fit`).

mod fit;
mod homes;

use super::device::{Device, DonorPolicy};
use super::engine::{CpuEngine, Engine};
use super::inventory::Inventory;
use crate::model::BlockKind;
use crate::{Error, Result};
use homes::Homes;

/// One block of the model, in model order, with its bytes as stored in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSize {
    pub kind: BlockKind,
    pub bytes: u64,
}

impl BlockSize {
    pub fn new(kind: BlockKind, bytes: u64) -> Self {
        BlockSize { kind, bytes }
    }
}

/// The loader's inputs that concern placement (contract §1). Its [`Default`] is the one
/// definition of their defaults: the CLI's flags, YAML run files and the C ABI all take them
/// from it.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// The compute device; `None` = `cuda:0` when the inventory has a GPU, else `cpu`.
    pub device: Option<String>,
    /// GiB of weights to move onto `donor_device`; 0.0..=128.0. `None`: the user did not set
    /// it, so [`DEFAULT_VIRTUAL_VRAM_GB`] applies and no warning says it was ignored.
    pub virtual_vram_gb: Option<f64>,
    pub donor_device: String,
    /// contract §5.2; empty (or only whitespace) = not set.
    pub expert_mode_allocations: String,
    /// Not used by the planner; carried along for the loader.
    pub eject_models: bool,
    pub donor_policy: DonorPolicy,
    /// What runs the CPU-executed blocks (contract §6.4); the loader resolves `auto` and
    /// names the result with [`Plan::set_cpu_engine`].
    pub cpu_engine: CpuEngine,
}

/// `virtual_vram_gb` when the user does not set it (DisTorch2's default).
pub const DEFAULT_VIRTUAL_VRAM_GB: f64 = 4.0;

/// Images per forward pass when the caller does not say (CLI, YAML, C ABI); the fit check's
/// activation reserve is sized for it.
pub const DEFAULT_BATCH_SIZE: usize = 8;

impl LoaderOptions {
    /// The `virtual_vram_gb` in effect: the user's, else the default.
    pub fn virtual_vram(&self) -> f64 {
        self.virtual_vram_gb.unwrap_or(DEFAULT_VIRTUAL_VRAM_GB)
    }
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            device: None,
            virtual_vram_gb: None,
            donor_device: "cpu".to_string(),
            expert_mode_allocations: String::new(),
            eject_models: true,
            donor_policy: DonorPolicy::Stream,
            cpu_engine: CpuEngine::Auto,
        }
    }
}

/// Which rule placed the blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    None,
    VirtualVram,
    Ratio,
    Bytes,
    Fraction,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::VirtualVram => "virtual_vram",
            Mode::Ratio => "ratio",
            Mode::Bytes => "bytes",
            Mode::Fraction => "fraction",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedBlock {
    pub kind: BlockKind,
    pub bytes: u64,
    /// Where its weights live.
    pub home: Device,
    /// Where it runs.
    pub exec: Device,
    /// What runs it there: CUDA on `cuda:N`, OpenVINO on `xpu:N`, and on the CPU the engine
    /// the loader resolved (MLAS until [`Plan::set_cpu_engine`] says otherwise).
    pub engine: Engine,
}

/// One inventory device as the plan uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceUse {
    pub device: Device,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Bytes of the blocks homed here.
    pub assigned_bytes: u64,
    /// Whether any block executes here (then the activation reserve counts here).
    pub executes: bool,
    /// `assigned_bytes` plus the activation reserve when `executes`.
    pub resident_bytes: u64,
    /// The byte budget the plan gave this device (bytes/fraction entries, virtual VRAM on the donor).
    pub budget_bytes: Option<u64>,
    /// The normalised share (percent) a ratio allocation gave this device.
    pub share_percent: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub compute_device: Device,
    pub mode: Mode,
    pub model_bytes: u64,
    pub blocks: Vec<PlacedBlock>,
    /// Every inventory device, in inventory order.
    pub devices: Vec<DeviceUse>,
    pub warnings: Vec<String>,
    pub donor_policy: DonorPolicy,
    pub activation_reserve_bytes: u64,
}

impl Plan {
    /// Names `cpu` as the engine of every block executing on the CPU.
    pub fn set_cpu_engine(&mut self, cpu: Engine) {
        for b in &mut self.blocks {
            b.engine = Engine::for_exec(b.exec, cpu);
        }
    }
}

fn parse_device_field(value: &str, field: &str, inv: &Inventory) -> Result<Device> {
    let d: Device = value
        .parse()
        .map_err(|e: Error| Error::invalid(format!("{field}: {}", e.message())))?;
    inv.require(d, field)?;
    Ok(d)
}

/// `cuda:0`, else the first CUDA GPU, else `cpu`. Intel GPUs are used only when named: an
/// integrated one is often slower than the CPU it shares memory with.
fn default_device(inv: &Inventory) -> Device {
    if inv.get(Device::Cuda(0)).is_some() {
        return Device::Cuda(0);
    }
    inv.devices
        .iter()
        .map(|d| d.device)
        .filter(|d| matches!(d, Device::Cuda(_)))
        .min()
        .unwrap_or(Device::Cpu)
}

/// The compute device `opts` asks for (`device`, or its default) after checking it exists.
pub fn compute_device(opts: &LoaderOptions, inv: &Inventory) -> Result<Device> {
    match &opts.device {
        Some(s) => parse_device_field(s, "device", inv),
        None => {
            let d = default_device(inv);
            inv.require(d, "device")?;
            Ok(d)
        }
    }
}

/// Places `blocks` per contract §5.3 and checks that the result fits.
pub fn plan(
    blocks: &[BlockSize],
    opts: &LoaderOptions,
    inv: &Inventory,
    activation_reserve_bytes: u64,
) -> Result<Plan> {
    let v = checked_virtual_vram(opts)?;
    let compute = compute_device(opts, inv)?;
    let donor = parse_device_field(&opts.donor_device, "donor_device", inv)?;
    let model_bytes = model_bytes(blocks)?;

    let mut warnings = Vec::new();
    let expert = opts.expert_mode_allocations.trim();
    let homes = if !expert.is_empty() {
        let alloc = homes::checked_allocation(expert, inv)?;
        // Only a value the user wrote is worth a word; the default is ignored silently.
        if opts.virtual_vram_gb.is_some_and(|v| v > 0.0) {
            warnings.push(format!(
                "virtual_vram_gb = {v} was ignored for placement: expert_mode_allocations decides alone"
            ));
        }
        homes::from_allocation(&alloc, blocks, inv, &mut warnings)
    } else {
        homes::from_virtual_vram(
            v,
            opts.virtual_vram_gb.is_some(),
            compute,
            donor,
            blocks,
            inv,
            &mut warnings,
        )
    };
    let placed = place_blocks(blocks, &homes, compute, opts.donor_policy, &mut warnings);
    let devices = fit::check_fit(&placed, &homes, inv, activation_reserve_bytes, compute)?;

    Ok(Plan {
        compute_device: compute,
        mode: homes.mode,
        model_bytes,
        blocks: placed,
        devices,
        warnings,
        donor_policy: opts.donor_policy,
        activation_reserve_bytes,
    })
}

/// The `virtual_vram_gb` in effect, checked to be within 0.0..=128.0.
fn checked_virtual_vram(opts: &LoaderOptions) -> Result<f64> {
    let v = opts.virtual_vram();
    if !(v.is_finite() && (0.0..=128.0).contains(&v)) {
        return Err(Error::invalid(format!(
            "virtual_vram_gb: {v} is out of range; valid values are 0.0 to 128.0 (GiB)"
        )));
    }
    Ok(v)
}

/// The model's total bytes; an error when there are no blocks or their sizes overflow.
fn model_bytes(blocks: &[BlockSize]) -> Result<u64> {
    if blocks.is_empty() {
        return Err(Error::invalid(
            "the model has no blocks to place; a CLIP Vision model has at least embed, one layer and head",
        ));
    }
    blocks
        .iter()
        .try_fold(0u64, |a, b| a.checked_add(b.bytes))
        .ok_or_else(|| {
            Error::invalid(format!(
                "the model's blocks add up to more than {} bytes; block sizes are wrong",
                u64::MAX
            ))
        })
}

/// Where a block homed on `home` runs: on a cpu compute device always cpu; a GPU home runs
/// its blocks; a cpu home streams to the compute device or runs there, per `policy`.
fn exec_device(compute: Device, home: Device, policy: DonorPolicy) -> Device {
    match (compute, home) {
        (Device::Cpu, _) => Device::Cpu,
        (_, Device::Cuda(_) | Device::Xpu(_)) => home,
        (_, Device::Cpu) => match policy {
            DonorPolicy::Stream => compute,
            DonorPolicy::Execute => Device::Cpu,
        },
    }
}

/// Each block with its home and exec device; with a cpu compute device, a warning per GPU that
/// homes blocks (their weights are copied to the CPU each pass).
fn place_blocks(
    blocks: &[BlockSize],
    homes: &Homes,
    compute: Device,
    policy: DonorPolicy,
    warnings: &mut Vec<String>,
) -> Vec<PlacedBlock> {
    let placed = blocks
        .iter()
        .zip(&homes.homes)
        .map(|(b, &home)| {
            let exec = exec_device(compute, home, policy);
            PlacedBlock {
                kind: b.kind,
                bytes: b.bytes,
                home,
                exec,
                engine: Engine::for_exec(exec, Engine::Mlas),
            }
        })
        .collect();
    if compute == Device::Cpu {
        let mut gpu_homes: Vec<Device> =
            homes.homes.iter().copied().filter(|h| h.is_gpu()).collect();
        gpu_homes.sort();
        gpu_homes.dedup();
        for g in gpu_homes {
            warnings.push(format!(
                "the compute device is cpu, so the blocks homed on {g} run on the CPU with their weights copied from {g} each pass; set device to {g} to run them where they live"
            ));
        }
    }
    placed
}
