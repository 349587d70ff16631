//! The DisTorch2 planner (contract §5): device names and inventory, the expert allocation
//! grammar, block placement (home and exec device per block), the fit check and the report.

mod device;
mod engine;
mod grammar;
mod inventory;
mod placement;
mod report;
mod units;

pub use device::{Device, DonorPolicy};
pub use engine::{CpuEngine, Engine};
pub use grammar::{parse_allocations, AllocEntry, AllocKind, Allocation, Amount};
pub use inventory::{DeviceInfo, Inventory};
pub use placement::{
    compute_device, plan, BlockSize, DeviceUse, LoaderOptions, Mode, PlacedBlock, Plan,
    DEFAULT_BATCH_SIZE, DEFAULT_VIRTUAL_VRAM_GB,
};
pub use report::Segment;
pub use units::{format_bytes, parse_bytes};

#[cfg(test)]
mod tests;
