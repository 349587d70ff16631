//! Where each block's weights live (contract §5.3): from the expert allocation string, or
//! from virtual VRAM (the first blocks onto the donor), or all on the compute device.

use super::{BlockSize, Mode};
use crate::plan::device::Device;
use crate::plan::grammar::{parse_allocations, AllocKind, Allocation, Amount};
use crate::plan::inventory::Inventory;
use crate::plan::units::format_bytes;
use crate::{Error, ErrorKind, Result};

/// What a rule gave one device, for the report: a byte budget (bytes/fraction entries, virtual
/// VRAM on the donor) or a normalised ratio share (percent).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Budget {
    pub device: Device,
    pub bytes: Option<u64>,
    pub share_percent: Option<f64>,
}

/// The outcome of one placement rule: a home per block, in model order.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Homes {
    pub mode: Mode,
    pub homes: Vec<Device>,
    /// In the order the rule named the devices; the first entry for a device counts.
    pub budgets: Vec<Budget>,
}

impl Homes {
    /// What the rule gave `d`: `(budget_bytes, share_percent)`.
    pub fn budget_of(&self, d: Device) -> (Option<u64>, Option<f64>) {
        self.budgets
            .iter()
            .find(|b| b.device == d)
            .map(|b| (b.bytes, b.share_percent))
            .unwrap_or((None, None))
    }
}

/// Byte offsets of the block boundaries: `0, b0, b0+b1, …, model_bytes`.
pub(super) fn prefix_sums(blocks: &[BlockSize]) -> Vec<u64> {
    let mut prefix = Vec::with_capacity(blocks.len() + 1);
    prefix.push(0u64);
    for b in blocks {
        prefix.push(prefix.last().copied().unwrap_or(0).saturating_add(b.bytes));
    }
    prefix
}

/// `expert_mode_allocations` (already trimmed, not empty) parsed, every device it names
/// checked against the inventory.
pub(super) fn checked_allocation(expert: &str, inv: &Inventory) -> Result<Allocation> {
    let alloc = parse_allocations(expert).map_err(|e| e.context("expert_mode_allocations"))?;
    for e in &alloc.entries {
        inv.require(e.device, "expert_mode_allocations")
            .map_err(|err| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("{} (in entry {:?})", err.message(), e.text),
                )
            })?;
    }
    Ok(alloc)
}

/// Homes from an allocation: each entry takes the next run of blocks by its ratio share or
/// byte budget; what no budget holds goes to cpu.
pub(super) fn from_allocation(
    alloc: &Allocation,
    blocks: &[BlockSize],
    inv: &Inventory,
    warnings: &mut Vec<String>,
) -> Homes {
    let n = blocks.len();
    let (budgets, ends) = match alloc.kind {
        AllocKind::Ratio => ratio_split(alloc, &prefix_sums(blocks), warnings),
        AllocKind::Bytes | AllocKind::Fraction => budget_split(alloc, blocks, inv, warnings),
    };
    let mut homes = vec![Device::Cpu; n];
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
    // budget the user wrote; the fit check fails if cpu cannot hold it.
    if start < n {
        warnings.push(format!(
            "blocks {} ({}) fit no device's budget and were placed on cpu",
            block_range(blocks, start, n),
            format_bytes(sum_bytes(&blocks[start..]))
        ));
    }
    let mode = match alloc.kind {
        AllocKind::Ratio => Mode::Ratio,
        AllocKind::Bytes => Mode::Bytes,
        AllocKind::Fraction => Mode::Fraction,
    };
    Homes {
        mode,
        homes,
        budgets,
    }
}

/// Ratio entries: each device's normalised share, and the end of its run of blocks. Shares
/// that do not add up to 100% are rescaled, with a warning.
fn ratio_split(
    alloc: &Allocation,
    prefix: &[u64],
    warnings: &mut Vec<String>,
) -> (Vec<Budget>, Vec<usize>) {
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
    let budgets = alloc
        .entries
        .iter()
        .zip(&shares)
        .map(|(e, s)| Budget {
            device: e.device,
            bytes: None,
            share_percent: Some(if sum > 0.0 { s / sum * 100.0 } else { 0.0 }),
        })
        .collect();
    (budgets, ratio_boundaries(prefix, &shares))
}

/// Bytes and fraction entries: each device's byte budget (`None` for `*`), and the end of its
/// run of blocks. A byte budget above the device's memory is kept, with a warning.
fn budget_split(
    alloc: &Allocation,
    blocks: &[BlockSize],
    inv: &Inventory,
    warnings: &mut Vec<String>,
) -> (Vec<Budget>, Vec<usize>) {
    let mut budgets = Vec::with_capacity(alloc.entries.len());
    for e in &alloc.entries {
        let total = inv.get(e.device).map(|d| d.total_bytes).unwrap_or(0);
        let bytes = match e.amount {
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
        budgets.push(Budget {
            device: e.device,
            bytes,
            share_percent: None,
        });
    }
    let limits: Vec<Option<u64>> = budgets.iter().map(|b| b.bytes).collect();
    let ends = budget_ends(blocks, &limits);
    (budgets, ends)
}

/// Homes without an allocation string: with virtual VRAM (`v` GiB, `v` > 0) and a donor other
/// than the compute device, the leading blocks that fit in `v` live on the donor; otherwise
/// every block lives on the compute device.
pub(super) fn from_virtual_vram(
    v: f64,
    user_set_vram: bool,
    compute: Device,
    donor: Device,
    blocks: &[BlockSize],
    inv: &Inventory,
    warnings: &mut Vec<String>,
) -> Homes {
    let n = blocks.len();
    let mut homes = vec![compute; n];
    if !(v > 0.0 && donor != compute) {
        // donor = device means "no donor". Said aloud when the user asked for virtual VRAM
        // or named a GPU donor (the default donor is cpu, so a CPU-only default run is quiet).
        if v > 0.0 && donor == compute && (user_set_vram || donor.is_gpu()) {
            warnings.push(format!(
                "donor_device {donor} is the compute device, so virtual_vram_gb = {v} moves nothing: every block stays on {compute}; name another donor_device to move weights off it"
            ));
        }
        return Homes {
            mode: Mode::None,
            homes,
            budgets: Vec::new(),
        };
    }
    let prefix = prefix_sums(blocks);
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
    if k == 0 {
        warnings.push(format!(
            "virtual VRAM: the first block {:?} ({}) is larger than the {} moved to {donor}; every block stays on {compute}",
            blocks[0].kind.name(),
            format_bytes(blocks[0].bytes),
            format_bytes(limit)
        ));
    } else if k == n {
        warnings.push(format!(
            "virtual VRAM: the whole model ({}) fits in the {} moved to {donor}; every block lives on {donor} and none on {compute}",
            format_bytes(prefix[n]),
            format_bytes(limit)
        ));
    }
    Homes {
        mode: Mode::VirtualVram,
        homes,
        budgets: vec![Budget {
            device: donor,
            bytes: Some(limit),
            share_percent: None,
        }],
    }
}

/// Names a run of blocks for messages: `layer.03` or `layer.03..head`.
fn block_range(blocks: &[BlockSize], start: usize, end: usize) -> String {
    match (
        blocks.get(start),
        end.checked_sub(1).and_then(|l| blocks.get(l)),
    ) {
        (Some(a), Some(_)) if end.saturating_sub(start) == 1 => a.kind.name(),
        (Some(a), Some(b)) => format!("{}..{}", a.kind, b.kind),
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
fn ratio_boundaries(prefix: &[u64], shares: &[f64]) -> Vec<usize> {
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
fn budget_ends(blocks: &[BlockSize], budgets: &[Option<u64>]) -> Vec<usize> {
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
