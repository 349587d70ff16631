//! The fit check (contract §5.3): each device must hold the weights homed on it plus, where a
//! block runs, the activation reserve.

use super::homes::Homes;
use super::{DeviceUse, PlacedBlock};
use crate::plan::device::Device;
use crate::plan::inventory::{DeviceInfo, Inventory};
use crate::plan::units::format_bytes;
use crate::{Error, ErrorKind, Result};

/// What each inventory device holds under `placed`, in inventory order; an error naming every
/// device that lacks the memory.
pub(super) fn check_fit(
    placed: &[PlacedBlock],
    homes: &Homes,
    inv: &Inventory,
    activation_reserve_bytes: u64,
    compute: Device,
) -> Result<Vec<DeviceUse>> {
    let mut devices = Vec::with_capacity(inv.devices.len());
    let mut too_big = Vec::new();
    for info in &inv.devices {
        let (usage, problem) = device_use(info, placed, homes, activation_reserve_bytes);
        too_big.extend(problem);
        devices.push(usage);
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
    Ok(devices)
}

/// One device's use, and why it does not fit (`None`: it does).
fn device_use(
    info: &DeviceInfo,
    placed: &[PlacedBlock],
    homes: &Homes,
    activation_reserve_bytes: u64,
) -> (DeviceUse, Option<String>) {
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
    let problem = (resident > info.free_bytes).then(|| {
        format!(
            "{d} needs {} ({} of weights for {count} block{} + {} activation reserve) but has {} free (of {} total)",
            format_bytes(resident),
            format_bytes(assigned),
            if count == 1 { "" } else { "s" },
            format_bytes(reserve),
            format_bytes(info.free_bytes),
            format_bytes(info.total_bytes)
        )
    });
    let (budget_bytes, share_percent) = homes.budget_of(d);
    let usage = DeviceUse {
        device: d,
        name: info.name.clone(),
        total_bytes: info.total_bytes,
        free_bytes: info.free_bytes,
        assigned_bytes: assigned,
        executes,
        resident_bytes: resident,
        budget_bytes,
        share_percent,
    };
    (usage, problem)
}
