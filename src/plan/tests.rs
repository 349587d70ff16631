//! Placement tests on a ViT-H/14-shaped f16 model with simulated devices; the reports and the
//! input errors are in `tests/report.rs`.

use super::*;
use crate::model::BlockKind;
use crate::ErrorKind;

mod report;

const G: u64 = 1 << 30;
const M: u64 = 1 << 20;
/// embed: conv 1280·3·14·14 + class 1280 + positions 257·1280 + pre-LN 2·1280, f16.
const EMBED: u64 = (1280 * 3 * 14 * 14 + 1280 + 257 * 1280 + 2 * 1280) * 2;
/// layer: q,k,v,out 4·1280² + biases, fc1/fc2 2·1280·5120 + biases, two LNs, f16.
const LAYER: u64 = (4 * 1280 * 1280 + 4 * 1280 + 2 * 1280 * 5120 + 5120 + 1280 + 4 * 1280) * 2;
/// head: post-LN 2·1280 + projection 1024·1280, f16.
const HEAD: u64 = (2 * 1280 + 1024 * 1280) * 2;

fn vit_h() -> Vec<BlockSize> {
    let mut v = vec![BlockSize::new(BlockKind::Embed, EMBED)];
    for index in 0..32 {
        v.push(BlockSize::new(
            BlockKind::Layer { index, layers: 32 },
            LAYER,
        ));
    }
    v.push(BlockSize::new(BlockKind::Head, HEAD));
    v
}

fn inv() -> Inventory {
    Inventory::simulate("cuda:0=24GiB,cuda:1=12GiB,cpu=64GiB").unwrap()
}

fn opts(device: &str, vram: f64, donor: &str, expert: &str) -> LoaderOptions {
    LoaderOptions {
        device: Some(device.to_string()),
        virtual_vram_gb: Some(vram),
        donor_device: donor.to_string(),
        expert_mode_allocations: expert.to_string(),
        ..LoaderOptions::default()
    }
}

/// (first, last, count, home, exec) per segment.
fn segs(p: &Plan) -> Vec<(String, String, usize, Device, Device)> {
    p.segments()
        .into_iter()
        .map(|s| (s.first, s.last, s.count, s.home, s.exec))
        .collect()
}

fn seg(
    first: &str,
    last: &str,
    count: usize,
    home: Device,
    exec: Device,
) -> (String, String, usize, Device, Device) {
    (first.to_string(), last.to_string(), count, home, exec)
}

const C0: Device = Device::Cuda(0);
const C1: Device = Device::Cuda(1);
const CPU: Device = Device::Cpu;

#[test]
fn model_shape() {
    assert_eq!(LAYER, 39_354_880);
    assert_eq!(EMBED, 2_170_880);
    assert_eq!(HEAD, 2_626_560);
    assert_eq!(vit_h().len(), 34);
}

#[test]
fn defaults() {
    let d = LoaderOptions::default();
    assert_eq!(d.device, None);
    assert_eq!(d.virtual_vram_gb, None);
    assert_eq!(d.virtual_vram(), 4.0);
    assert_eq!(d.donor_device, "cpu");
    assert_eq!(d.expert_mode_allocations, "");
    assert!(d.eject_models);
    assert_eq!(d.donor_policy, DonorPolicy::Stream);

    // With a GPU: compute cuda:0, 4 GiB of virtual VRAM on cpu holds the whole 1.18 GiB model.
    let p = plan(&vit_h(), &d, &inv(), 0).unwrap();
    assert_eq!(p.compute_device, C0);
    assert_eq!(p.mode, Mode::VirtualVram);
    assert_eq!(segs(&p), vec![seg("embed", "head", 34, CPU, C0)]);
    assert!(
        p.warnings.iter().any(|w| w.contains("whole model")),
        "{:?}",
        p.warnings
    );

    // Without a GPU: compute cpu, donor = device, so mode none.
    let cpu_only = Inventory::simulate("cpu=64GiB").unwrap();
    let p = plan(&vit_h(), &d, &cpu_only, 0).unwrap();
    assert_eq!(p.compute_device, CPU);
    assert_eq!(p.mode, Mode::None);
    assert_eq!(segs(&p), vec![seg("embed", "head", 34, CPU, CPU)]);
    assert!(p.warnings.is_empty());
}

#[test]
fn no_offload() {
    let p = plan(&vit_h(), &opts("cuda:1", 0.0, "cpu", ""), &inv(), 0).unwrap();
    assert_eq!(p.mode, Mode::None);
    assert_eq!(segs(&p), vec![seg("embed", "head", 34, C1, C1)]);
    let p = plan(&vit_h(), &opts("cuda:0", 8.0, "cuda:0", ""), &inv(), 0).unwrap();
    assert_eq!(p.mode, Mode::None);
    assert_eq!(segs(&p), vec![seg("embed", "head", 34, C0, C0)]);
    assert_eq!(p.model_bytes, EMBED + 32 * LAYER + HEAD);
}

#[test]
fn virtual_vram_8gib_from_cuda1() {
    // 8 GiB exceeds the whole model: the donor holds every block, each runs where it lives.
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 8.0, "cuda:1", ""),
        &inv(),
        256 * M,
    )
    .unwrap();
    assert_eq!(p.mode, Mode::VirtualVram);
    assert_eq!(segs(&p), vec![seg("embed", "head", 34, C1, C1)]);
    assert_eq!(p.exec_devices(), vec![C1]);
    let c1 = p.devices.iter().find(|d| d.device == C1).unwrap();
    assert_eq!(c1.budget_bytes, Some(8 * G));
    assert_eq!(c1.resident_bytes, p.model_bytes + 256 * M);
    let c0 = p.devices.iter().find(|d| d.device == C0).unwrap();
    assert_eq!(
        (c0.assigned_bytes, c0.executes, c0.resident_bytes),
        (0, false, 0)
    );
}

#[test]
fn virtual_vram_prefix() {
    // 0.5 GiB: embed + 13 layers = 513,784,320 B <= 536,870,912 B; one more layer does not fit.
    let p = plan(&vit_h(), &opts("cuda:0", 0.5, "cuda:1", ""), &inv(), 0).unwrap();
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.12", 14, C1, C1),
            seg("layer.13", "head", 20, C0, C0)
        ]
    );
    assert_eq!(p.exec_devices(), vec![C1, C0]);
    // donor cpu, stream: runs on cuda:0; execute: runs on the CPU.
    let p = plan(&vit_h(), &opts("cuda:0", 0.5, "cpu", ""), &inv(), 0).unwrap();
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.12", 14, CPU, C0),
            seg("layer.13", "head", 20, C0, C0)
        ]
    );
    let mut o = opts("cuda:0", 0.5, "cpu", "");
    o.donor_policy = DonorPolicy::Execute;
    let p = plan(&vit_h(), &o, &inv(), 0).unwrap();
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.12", 14, CPU, CPU),
            seg("layer.13", "head", 20, C0, C0)
        ]
    );
    assert_eq!(p.exec_devices(), vec![CPU, C0]);
    // The donor's total caps the budget.
    let small = Inventory::simulate("cuda:0=24GiB,cuda:1=100MiB,cpu=64GiB").unwrap();
    let p = plan(&vit_h(), &opts("cuda:0", 8.0, "cuda:1", ""), &small, 0).unwrap();
    assert_eq!(segs(&p)[0], seg("embed", "layer.01", 3, C1, C1));
    // Smaller than the first block: nothing moves, and the report says so.
    let p = plan(&vit_h(), &opts("cuda:0", 0.001, "cuda:1", ""), &inv(), 0).unwrap();
    assert_eq!(segs(&p), vec![seg("embed", "head", 34, C0, C0)]);
    assert!(
        p.warnings.iter().any(|w| w.contains("larger than")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn ratio_60_30_10() {
    // 60% of 1,264,153,600 B = 758,492,160: embed+19 layers (749,913,600) is nearest.
    // 90% = 1,137,738,240: embed+29 layers (1,143,462,400) is nearest.
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,60%;cuda:1,30%;cpu,10%"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(p.mode, Mode::Ratio);
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.18", 20, C0, C0),
            seg("layer.19", "layer.28", 10, C1, C1),
            seg("layer.29", "head", 4, CPU, C0),
        ]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let share = |d| {
        p.devices
            .iter()
            .find(|u| u.device == d)
            .unwrap()
            .share_percent
    };
    assert_eq!(share(C0), Some(60.0));
    assert_eq!(share(CPU), Some(10.0));
    // Shares are normalised: 6:3:1 is the same plan.
    let q = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,6%;cuda:1,3%;cpu,1%"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(segs(&q), segs(&p));
    // Order written decides who gets the first blocks.
    let r = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cpu,10%;cuda:1,30%;cuda:0,60%"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(r.blocks[0].home, CPU);
    assert_eq!(r.blocks[33].home, C0);
}

#[test]
fn ratio_50_star() {
    // 50% = 632,076,800: embed+16 layers (631,848,960) is nearest.
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,50%;cpu,*"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(p.mode, Mode::Ratio);
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.15", 17, C0, C0),
            seg("layer.16", "head", 17, CPU, C0)
        ]
    );
}

#[test]
fn bytes_4gb_2gb_rest() {
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,4gb;cuda:1,2gb;cpu,*"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(p.mode, Mode::Bytes);
    assert_eq!(segs(&p), vec![seg("embed", "head", 34, C0, C0)]);
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("cuda:1") && p.warnings[0].contains("no blocks"));
    let c0 = p.devices.iter().find(|d| d.device == C0).unwrap();
    assert_eq!(c0.budget_bytes, Some(4 * G));
}

#[test]
fn bytes_small_budgets() {
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,512mb;cuda:1,256mb;cpu,*"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.12", 14, C0, C0),
            seg("layer.13", "layer.18", 6, C1, C1),
            seg("layer.19", "head", 14, CPU, C0),
        ]
    );
    // '*' in the middle takes just enough for the rest to fit the 512 MiB after it.
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,256mb;cpu,*;cuda:1,512mb"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.05", 7, C0, C0),
            seg("layer.06", "layer.18", 13, CPU, C0),
            seg("layer.19", "head", 14, C1, C1),
        ]
    );
    for d in &p.devices {
        if let Some(b) = d.budget_bytes {
            assert!(d.assigned_bytes <= b);
        }
    }
}

#[test]
fn bytes_overflow_goes_to_cpu() {
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,100mb;cuda:1,100mb"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.01", 3, C0, C0),
            seg("layer.02", "layer.03", 2, C1, C1),
            seg("layer.04", "head", 29, CPU, C0),
        ]
    );
    assert!(
        p.warnings.iter().any(|w| w.contains("layer.04..head")
            && w.contains("fit no device")
            && w.contains("cpu")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn fraction_of_total_memory() {
    let inv = Inventory::simulate("cuda:0=4GiB,cuda:1=2GiB/1GiB,cpu=64GiB").unwrap();
    // cuda:0: 0.1 × 4 GiB = 429,496,729 B → embed + 10 layers; cuda:1: 0.25 × 2 GiB (total, not free).
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,0.1;cuda:1,0.25;cpu,1"),
        &inv,
        0,
    )
    .unwrap();
    assert_eq!(p.mode, Mode::Fraction);
    assert_eq!(
        segs(&p),
        vec![
            seg("embed", "layer.09", 11, C0, C0),
            seg("layer.10", "layer.22", 13, C1, C1),
            seg("layer.23", "head", 10, CPU, C0),
        ]
    );
    let c1 = p.devices.iter().find(|d| d.device == C1).unwrap();
    assert_eq!(c1.budget_bytes, Some(G / 2));
}

#[test]
fn expert_and_virtual_vram_warns() {
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 8.0, "cuda:1", "cuda:0,50%;cpu,*"),
        &inv(),
        0,
    )
    .unwrap();
    assert_eq!(p.mode, Mode::Ratio);
    assert_eq!(p.warnings.len(), 1);
    assert!(p.warnings[0].contains("virtual_vram_gb") && p.warnings[0].contains("ignored"));
    assert!(p.blocks.iter().all(|b| b.home != C1));
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cuda:1", "cuda:0,50%;cpu,*"),
        &inv(),
        0,
    )
    .unwrap();
    assert!(p.warnings.is_empty());
    // A whitespace-only expert string is "not set".
    let p = plan(&vit_h(), &opts("cuda:0", 0.0, "cpu", "  "), &inv(), 0).unwrap();
    assert_eq!(p.mode, Mode::None);
}

#[test]
fn does_not_fit() {
    let small = Inventory::simulate("cuda:0=1GiB,cpu=64GiB").unwrap();
    let e = plan(&vit_h(), &opts("cuda:0", 0.0, "cpu", ""), &small, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DoesNotFit);
    let m = e.message();
    assert!(
        m.contains("cuda:0 needs 1.18 GiB") && m.contains("1.00 GiB free"),
        "{m}"
    );
    // The activation reserve counts on the device that executes.
    let tight = Inventory::simulate("cuda:0=24GiB/1.2GiB,cpu=64GiB").unwrap();
    assert!(plan(&vit_h(), &opts("cuda:0", 0.0, "cpu", ""), &tight, 0).is_ok());
    let e = plan(&vit_h(), &opts("cuda:0", 0.0, "cpu", ""), &tight, 256 * M).unwrap_err();
    assert!(
        e.message().contains("256.00 MiB activation reserve"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("1.20 GiB free"), "{}", e.message());
    // Offloading makes it fit; with stream policy the reserve stays on cuda:0 only.
    let p = plan(&vit_h(), &opts("cuda:0", 0.5, "cpu", ""), &tight, 256 * M).unwrap();
    let cpu = p.devices.iter().find(|d| d.device == CPU).unwrap();
    assert!(!cpu.executes);
    assert_eq!(cpu.resident_bytes, cpu.assigned_bytes);
    // Several devices too small: all are named.
    let tiny = Inventory::simulate("cuda:0=100MiB,cuda:1=100MiB,cpu=64GiB").unwrap();
    let e = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,50%;cuda:1,50%"),
        &tiny,
        0,
    )
    .unwrap_err();
    assert!(e.message().contains("cuda:0 needs") && e.message().contains("cuda:1 needs"));
}

#[test]
fn compute_cpu_runs_everything_on_cpu() {
    let p = plan(
        &vit_h(),
        &opts("cpu", 0.0, "cpu", "cuda:0,50%;cpu,*"),
        &inv(),
        0,
    )
    .unwrap();
    assert!(p.blocks.iter().all(|b| b.exec == CPU));
    assert_eq!(p.blocks[0].home, C0);
    assert!(p
        .warnings
        .iter()
        .any(|w| w.contains("compute device is cpu")));
    assert_eq!(p.exec_devices(), vec![CPU]);
}

#[test]
fn default_device_without_cuda0() {
    let inv = Inventory::simulate("cuda:1=24GiB,cpu=64GiB").unwrap();
    let o = LoaderOptions {
        virtual_vram_gb: Some(0.0),
        ..LoaderOptions::default()
    };
    let p = plan(&vit_h(), &o, &inv, 0).unwrap();
    assert_eq!(p.compute_device, C1);
}

#[test]
fn bytes_leftover_never_goes_beyond_a_gpu_budget() {
    // 1.18 GiB of ViT-H, 256 MiB on each GPU: the rest homes on cpu (streamed to cuda:0).
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,256mb;cuda:1,256mb"),
        &inv(),
        0,
    )
    .unwrap();
    for d in &p.devices {
        if let Some(b) = d.budget_bytes {
            assert!(d.assigned_bytes <= b, "{} over its budget", d.device);
        }
    }
    let on_cpu: Vec<&PlacedBlock> = p.blocks.iter().filter(|b| b.home == CPU).collect();
    assert!(!on_cpu.is_empty());
    assert_eq!(on_cpu.last().unwrap().kind, BlockKind::Head);
    assert!(on_cpu.iter().all(|b| b.exec == C0));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("..head") && w.contains("placed on cpu")),
        "{:?}",
        p.warnings
    );
    // When cpu cannot hold the rest either, planning fails naming cpu; it never spills onto
    // the GPUs, however much they have free.
    let small_cpu = Inventory::simulate("cuda:0=24GiB,cuda:1=12GiB,cpu=512MiB").unwrap();
    let e = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,256mb;cuda:1,256mb"),
        &small_cpu,
        0,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DoesNotFit, "{e}");
    assert!(e.message().contains("cpu needs"), "{e}");
}
