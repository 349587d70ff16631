//! The DisTorch2 placement (contract §5.3): which device holds each block's weights (home) and
//! which runs it (exec), and the fit check.

use super::device::{Device, DonorPolicy};
use super::grammar::{parse_allocations, AllocKind, Allocation, Amount};
use super::inventory::Inventory;
use super::units::format_bytes;
use crate::{Error, ErrorKind, Result};

/// One block of the model, in model order, with its bytes as stored in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSize {
    pub name: String,
    pub bytes: u64,
}

impl BlockSize {
    pub fn new(name: impl Into<String>, bytes: u64) -> Self {
        BlockSize {
            name: name.into(),
            bytes,
        }
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
    pub name: String,
    pub bytes: u64,
    /// Where its weights live.
    pub home: Device,
    /// Where it runs.
    pub exec: Device,
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

fn parse_device_field(value: &str, field: &str, inv: &Inventory) -> Result<Device> {
    let d: Device = value
        .parse()
        .map_err(|e: Error| Error::invalid(format!("{field}: {}", e.message())))?;
    inv.require(d, field)?;
    Ok(d)
}

fn default_device(inv: &Inventory) -> Device {
    if inv.get(Device::Cuda(0)).is_some() {
        return Device::Cuda(0);
    }
    inv.devices
        .iter()
        .map(|d| d.device)
        .filter(|d| d.is_gpu())
        .min()
        .unwrap_or(Device::Cpu)
}

/// Names a run of blocks for messages: `layer.03` or `layer.03..head`.
fn block_range(blocks: &[BlockSize], start: usize, end: usize) -> String {
    match (
        blocks.get(start),
        end.checked_sub(1).and_then(|l| blocks.get(l)),
    ) {
        (Some(a), Some(_)) if end.saturating_sub(start) == 1 => a.name.clone(),
        (Some(a), Some(b)) => format!("{}..{}", a.name, b.name),
        _ => String::from("(none)"),
    }
}

/// A percentage for messages: at most two decimals, no trailing zeros.
fn round_percent(p: f64) -> String {
    let s = format!("{p:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Sums bytes; the caller has checked that the whole model's sum fits in u64.
fn sum_bytes(blocks: &[BlockSize]) -> u64 {
    blocks.iter().fold(0u64, |a, b| a.saturating_add(b.bytes))
}

/// Ratio: boundary after device j = the block boundary (prefix sum) nearest the cumulative
/// share, ties to the earlier boundary; the last boundary is the end of the model.
/// Returns the end index of each device's segment.
pub(crate) fn ratio_boundaries(prefix: &[u64], shares: &[f64]) -> Vec<usize> {
    let n = prefix.len().saturating_sub(1);
    let total = prefix.last().copied().unwrap_or(0) as f64;
    let sum: f64 = shares.iter().sum();
    let mut ends = Vec::with_capacity(shares.len());
    let mut cum = 0.0;
    let mut prev = 0usize;
    for (j, s) in shares.iter().enumerate() {
        cum += s;
        if j + 1 == shares.len() {
            ends.push(n);
            break;
        }
        let target = if sum > 0.0 { total * (cum / sum) } else { 0.0 };
        let mut best = prev;
        let mut best_d = f64::INFINITY;
        for (k, &c) in prefix.iter().enumerate().skip(prev) {
            let d = (c as f64 - target).abs();
            if d < best_d {
                best_d = d;
                best = k;
            }
        }
        ends.push(best);
        prev = best;
    }
    ends
}

/// From `start`, each budget in turn takes blocks while they fit; returns where it stopped.
fn greedy_end(blocks: &[BlockSize], start: usize, budgets: &[u64]) -> usize {
    let mut p = start;
    for &b in budgets {
        let mut used = 0u64;
        while let Some(blk) = blocks.get(p) {
            match used.checked_add(blk.bytes) {
                Some(u) if u <= b => {
                    used = u;
                    p += 1;
                }
                _ => break,
            }
        }
    }
    p
}

/// Bytes/fraction: segment end per entry; `None` budget is the `*` entry.
pub(crate) fn budget_ends(blocks: &[BlockSize], budgets: &[Option<u64>]) -> Vec<usize> {
    let n = blocks.len();
    let mut ends = Vec::with_capacity(budgets.len());
    let mut p = 0usize;
    for (j, b) in budgets.iter().enumerate() {
        match b {
            Some(b) => p = greedy_end(blocks, p, &[*b]),
            None => {
                let after: Vec<u64> = budgets[j + 1..]
                    .iter()
                    .map(|x| x.unwrap_or(u64::MAX))
                    .collect();
                let mut t = p;
                while t < n && greedy_end(blocks, t, &after) < n {
                    t += 1;
                }
                p = t;
            }
        }
        ends.push(p);
    }
    ends
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
    let v = opts.virtual_vram();
    if !(v.is_finite() && (0.0..=128.0).contains(&v)) {
        return Err(Error::invalid(format!(
            "virtual_vram_gb: {v} is out of range; valid values are 0.0 to 128.0 (GiB)"
        )));
    }
    let compute = compute_device(opts, inv)?;
    let donor = parse_device_field(&opts.donor_device, "donor_device", inv)?;
    if blocks.is_empty() {
        return Err(Error::invalid(
            "the model has no blocks to place; a CLIP Vision model has at least embed, one layer and head",
        ));
    }
    let model_bytes = blocks
        .iter()
        .try_fold(0u64, |a, b| a.checked_add(b.bytes))
        .ok_or_else(|| {
            Error::invalid(format!(
                "the model's blocks add up to more than {} bytes; block sizes are wrong",
                u64::MAX
            ))
        })?;
    let n = blocks.len();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0u64);
    for b in blocks {
        prefix.push(prefix.last().copied().unwrap_or(0).saturating_add(b.bytes));
    }

    let mut warnings = Vec::new();
    let mut homes: Vec<Device> = vec![compute; n];
    let mut budgets: Vec<(Device, Option<u64>, Option<f64>)> = Vec::new();
    let expert = opts.expert_mode_allocations.trim();

    let mode = if !expert.is_empty() {
        let alloc: Allocation =
            parse_allocations(expert).map_err(|e| e.context("expert_mode_allocations"))?;
        for e in &alloc.entries {
            inv.require(e.device, "expert_mode_allocations")
                .map_err(|err| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("{} (in entry {:?})", err.message(), e.text),
                    )
                })?;
        }
        // Only a value the user wrote is worth a word; the default is ignored silently.
        if opts.virtual_vram_gb.is_some_and(|v| v > 0.0) {
            warnings.push(format!(
                "virtual_vram_gb = {v} was ignored for placement: expert_mode_allocations decides alone"
            ));
        }
        let ends = match alloc.kind {
            AllocKind::Ratio => {
                let shares: Vec<f64> = alloc
                    .entries
                    .iter()
                    .map(|e| match e.amount {
                        Amount::Ratio(p) => p,
                        _ => 0.0,
                    })
                    .collect();
                let sum: f64 = shares.iter().sum();
                if sum > 0.0 && (sum - 100.0).abs() > 1e-6 {
                    let scaled: Vec<String> = alloc
                        .entries
                        .iter()
                        .zip(&shares)
                        .map(|(e, s)| format!("{} {}%", e.device, round_percent(s / sum * 100.0)))
                        .collect();
                    warnings.push(format!(
                        "the ratio shares add up to {}%, not 100%; they were rescaled to {}",
                        round_percent(sum),
                        scaled.join(", ")
                    ));
                }
                for (e, s) in alloc.entries.iter().zip(&shares) {
                    budgets.push((
                        e.device,
                        None,
                        Some(if sum > 0.0 { s / sum * 100.0 } else { 0.0 }),
                    ));
                }
                ratio_boundaries(&prefix, &shares)
            }
            AllocKind::Bytes | AllocKind::Fraction => {
                let mut b: Vec<Option<u64>> = Vec::with_capacity(alloc.entries.len());
                for e in &alloc.entries {
                    let total = inv.get(e.device).map(|d| d.total_bytes).unwrap_or(0);
                    let budget = match e.amount {
                        Amount::Bytes(x) => {
                            if x > total {
                                warnings.push(format!(
                                    "{} (entry {:?}): the budget {} is more than the device's {} of memory; it can hold at most that",
                                    e.device,
                                    e.text,
                                    format_bytes(x),
                                    format_bytes(total)
                                ));
                            }
                            Some(x)
                        }
                        Amount::Fraction(f) => Some(((f * total as f64).floor() as u64).min(total)),
                        _ => None,
                    };
                    budgets.push((e.device, budget, None));
                    b.push(budget);
                }
                budget_ends(blocks, &b)
            }
        };
        let mut start = 0usize;
        for (e, &end) in alloc.entries.iter().zip(&ends) {
            let end = end.clamp(start, n);
            if end == start {
                warnings.push(format!(
                    "{} (entry {:?}) was given no blocks",
                    e.device, e.text
                ));
            }
            for h in &mut homes[start..end] {
                *h = e.device;
            }
            start = end;
        }
        // The remainder goes to cpu, DisTorch's default `*`, never onto a GPU beyond the
        // budget the user wrote; the fit check below fails if cpu cannot hold it.
        if start < n {
            for h in &mut homes[start..n] {
                *h = Device::Cpu;
            }
            warnings.push(format!(
                "blocks {} ({}) fit no device's budget and were placed on cpu",
                block_range(blocks, start, n),
                format_bytes(sum_bytes(&blocks[start..]))
            ));
        }
        match alloc.kind {
            AllocKind::Ratio => Mode::Ratio,
            AllocKind::Bytes => Mode::Bytes,
            AllocKind::Fraction => Mode::Fraction,
        }
    } else if v > 0.0 && donor != compute {
        let donor_total = inv.get(donor).map(|d| d.total_bytes).unwrap_or(0);
        let asked = (v * (1u64 << 30) as f64) as u64;
        if asked > donor_total {
            warnings.push(format!(
                "virtual_vram_gb = {v} ({}) is more than {donor}'s {} of memory; at most that moves there",
                format_bytes(asked),
                format_bytes(donor_total)
            ));
        }
        let limit = asked.min(donor_total);
        let k = prefix.iter().rposition(|&c| c <= limit).unwrap_or(0);
        for h in &mut homes[..k] {
            *h = donor;
        }
        budgets.push((donor, Some(limit), None));
        if k == 0 {
            warnings.push(format!(
                "virtual VRAM: the first block {:?} ({}) is larger than the {} moved to {donor}; every block stays on {compute}",
                blocks[0].name,
                format_bytes(blocks[0].bytes),
                format_bytes(limit)
            ));
        } else if k == n {
            warnings.push(format!(
                "virtual VRAM: the whole model ({}) fits in the {} moved to {donor}; every block lives on {donor} and none on {compute}",
                format_bytes(model_bytes),
                format_bytes(limit)
            ));
        }
        Mode::VirtualVram
    } else {
        // donor = device means "no donor". Said aloud when the user asked for virtual VRAM
        // or named a GPU donor (the default donor is cpu, so a CPU-only default run is quiet).
        if v > 0.0 && donor == compute && (opts.virtual_vram_gb.is_some() || donor.is_gpu()) {
            warnings.push(format!(
                "donor_device {donor} is the compute device, so virtual_vram_gb = {v} moves nothing: every block stays on {compute}; name another donor_device to move weights off it"
            ));
        }
        Mode::None
    };

    let exec_of = |home: Device| -> Device {
        match (compute, home) {
            (Device::Cpu, _) => Device::Cpu,
            (_, Device::Cuda(_)) => home,
            (_, Device::Cpu) => match opts.donor_policy {
                DonorPolicy::Stream => compute,
                DonorPolicy::Execute => Device::Cpu,
            },
        }
    };
    let placed: Vec<PlacedBlock> = blocks
        .iter()
        .zip(&homes)
        .map(|(b, &home)| PlacedBlock {
            name: b.name.clone(),
            bytes: b.bytes,
            home,
            exec: exec_of(home),
        })
        .collect();

    if compute == Device::Cpu {
        let mut gpu_homes: Vec<Device> = homes.iter().copied().filter(|h| h.is_gpu()).collect();
        gpu_homes.sort();
        gpu_homes.dedup();
        for g in gpu_homes {
            warnings.push(format!(
                "the compute device is cpu, so the blocks homed on {g} run on the CPU with their weights copied from {g} each pass; set device to {g} to run them where they live"
            ));
        }
    }

    let mut devices = Vec::with_capacity(inv.devices.len());
    let mut too_big = Vec::new();
    for info in &inv.devices {
        let d = info.device;
        let assigned = placed
            .iter()
            .filter(|b| b.home == d)
            .fold(0u64, |a, b| a.saturating_add(b.bytes));
        let count = placed.iter().filter(|b| b.home == d).count();
        let executes = placed.iter().any(|b| b.exec == d);
        let reserve = if executes {
            activation_reserve_bytes
        } else {
            0
        };
        let resident = assigned.saturating_add(reserve);
        if resident > info.free_bytes {
            too_big.push(format!(
                "{d} needs {} ({} of weights for {count} block{} + {} activation reserve) but has {} free (of {} total)",
                format_bytes(resident),
                format_bytes(assigned),
                if count == 1 { "" } else { "s" },
                format_bytes(reserve),
                format_bytes(info.free_bytes),
                format_bytes(info.total_bytes)
            ));
        }
        let (budget_bytes, share_percent) = budgets
            .iter()
            .find(|(bd, _, _)| *bd == d)
            .map(|(_, b, s)| (*b, *s))
            .unwrap_or((None, None));
        devices.push(DeviceUse {
            device: d,
            name: info.name.clone(),
            total_bytes: info.total_bytes,
            free_bytes: info.free_bytes,
            assigned_bytes: assigned,
            executes,
            resident_bytes: resident,
            budget_bytes,
            share_percent,
        });
    }
    if !too_big.is_empty() {
        return Err(Error::new(
            ErrorKind::DoesNotFit,
            format!(
                "the plan does not fit: {}; move blocks to other devices with virtual_vram_gb / donor_device or expert_mode_allocations (e.g. \"{compute},50%;cpu,*\"), or free memory",
                too_big.join("; ")
            ),
        ));
    }

    Ok(Plan {
        compute_device: compute,
        mode,
        model_bytes,
        blocks: placed,
        devices,
        warnings,
        donor_policy: opts.donor_policy,
        activation_reserve_bytes,
    })
}
