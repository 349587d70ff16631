//! Property tests of the DisTorch2 planner, and "never panics" checks on every parser
//! (standing in for cargo fuzz so they run in CI).

use distorch_vision::model::BlockKind;
use distorch_vision::plan::{
    parse_allocations, parse_bytes, plan, BlockSize, Device, DonorPolicy, Engine, Inventory,
    LoaderOptions, Mode, Plan,
};
use distorch_vision::ErrorKind;
use proptest::prelude::*;

/// Two CUDA GPUs, an Intel GPU (`xpu:0`, OpenVINO's) and the CPU.
const POOL: [&str; 4] = ["cuda:0", "cuda:1", "xpu:0", "cpu"];
/// Every device practically unlimited; cuda:3 is the compute device and never listed.
const BIG: &str = "cuda:0=1000000t,cuda:1=1000000t,xpu:0=1000000t,cuda:3=1000000t,cpu=1000000t";

fn blocks_from(sizes: &[u64]) -> Vec<BlockSize> {
    sizes
        .iter()
        .enumerate()
        .map(|(index, &b)| {
            let layers = sizes.len();
            BlockSize::new(BlockKind::Layer { index, layers }, b)
        })
        .collect()
}

fn prefix(sizes: &[u64]) -> Vec<u64> {
    let mut p = vec![0u64];
    for s in sizes {
        p.push(p.last().unwrap() + s);
    }
    p
}

fn options(device: &str, vram: f64, donor: &str, expert: &str) -> LoaderOptions {
    LoaderOptions {
        device: Some(device.into()),
        virtual_vram_gb: Some(vram),
        donor_device: donor.into(),
        expert_mode_allocations: expert.into(),
        ..LoaderOptions::default()
    }
}

/// Blocks are the input blocks, in order, each exactly once.
fn assert_same_blocks(p: &Plan, sizes: &[u64]) {
    assert_eq!(p.blocks.len(), sizes.len());
    for (i, (b, &s)) in p.blocks.iter().zip(sizes).enumerate() {
        let layers = sizes.len();
        assert_eq!(b.kind, BlockKind::Layer { index: i, layers });
        assert_eq!(b.bytes, s);
    }
    assert_eq!(p.model_bytes, sizes.iter().sum::<u64>());
    let seg_total: usize = p.segments().iter().map(|s| s.count).sum();
    assert_eq!(seg_total, sizes.len());
}

/// Walks the devices in written order, each taking a contiguous run; returns the run ends.
fn written_order_ends(p: &Plan, devices: &[Device]) -> Vec<usize> {
    let mut pos = 0;
    let mut ends = Vec::new();
    for &d in devices {
        while pos < p.blocks.len() && p.blocks[pos].home == d {
            pos += 1;
        }
        ends.push(pos);
    }
    ends
}

/// The exec rule of contract §5.3.
fn assert_exec_rule(p: &Plan) {
    for b in &p.blocks {
        let want = match (p.compute_device, b.home) {
            (Device::Cpu, _) => Device::Cpu,
            (_, Device::Cuda(_) | Device::Xpu(_)) => b.home,
            (c, Device::Cpu) => match p.donor_policy {
                DonorPolicy::Stream => c,
                DonorPolicy::Execute => Device::Cpu,
            },
        };
        assert_eq!(b.exec, want, "{}", b.kind);
        // Intel GPUs run on OpenVINO, CUDA GPUs on CUDA, the CPU on the engine the loader names.
        let engine = match b.exec {
            Device::Cpu => Engine::Mlas,
            Device::Cuda(_) => Engine::Cuda,
            Device::Xpu(_) => Engine::OpenVino,
        };
        assert_eq!(b.engine, engine, "{}", b.kind);
    }
}

fn device_subset() -> impl Strategy<Value = Vec<&'static str>> {
    (Just(POOL.to_vec()).prop_shuffle(), 1usize..=4).prop_map(|(v, k)| v[..k].to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ratio_placement(
        sizes in prop::collection::vec(prop_oneof![3 => 0u64..=(1u64 << 32), 1 => Just(0u64)], 1..48),
        devs in device_subset(),
        pcts in prop::collection::vec(0u32..=100, 4),
        star in prop::option::of(0usize..4),
        execute in any::<bool>(),
    ) {
        let star = star.filter(|&s| s < devs.len());
        let mut shares: Vec<f64> = pcts[..devs.len()].iter().map(|&p| p as f64).collect();
        let others: f64 = shares.iter().enumerate().filter(|(i, _)| Some(*i) != star).map(|(_, s)| s).sum();
        if let Some(s) = star {
            prop_assume!(others <= 100.0);
            shares[s] = 100.0 - others;
        } else {
            prop_assume!(others > 0.0);
        }
        let expert: Vec<String> = devs.iter().enumerate().map(|(i, d)| {
            if Some(i) == star { format!("{d},*") } else { format!("{d},{}%", pcts[i]) }
        }).collect();
        let expert = expert.join(";");
        let mut o = options("cuda:3", 0.0, "cpu", &expert);
        if execute { o.donor_policy = DonorPolicy::Execute; }
        let inv = Inventory::simulate(BIG).unwrap();
        let p = plan(&blocks_from(&sizes), &o, &inv, 0).unwrap();
        prop_assert_eq!(p.mode, Mode::Ratio);
        assert_same_blocks(&p, &sizes);
        assert_exec_rule(&p);
        let devices: Vec<Device> = devs.iter().map(|d| d.parse().unwrap()).collect();
        let ends = written_order_ends(&p, &devices);
        prop_assert_eq!(*ends.last().unwrap(), sizes.len(), "not contiguous in written order: {}", expert);

        // Each inner boundary is the prefix sum nearest the cumulative share, ties to the earlier.
        let pre = prefix(&sizes);
        let total = p.model_bytes as f64;
        let sum: f64 = shares.iter().sum();
        let mut cum = 0.0;
        for j in 0..devices.len() - 1 {
            cum += shares[j];
            let t = total * (cum / sum);
            let dist = |k: usize| (pre[k] as f64 - t).abs();
            let e = ends[j];
            for k in 0..pre.len() {
                if k < e {
                    prop_assert!(dist(k) > dist(e), "boundary {} of {}: {} is as near as {}", j, expert, k, e);
                } else {
                    prop_assert!(dist(k) >= dist(e), "boundary {} of {}: {} is nearer than {}", j, expert, k, e);
                }
            }
        }
    }

    #[test]
    fn bytes_placement(
        sizes in prop::collection::vec(prop_oneof![4 => 0u64..1000, 1 => Just(0u64)], 1..48),
        devs in device_subset(),
        budgets in prop::collection::vec(0u64..3000, 4),
        star in prop::option::of(0usize..4),
    ) {
        let star = star.filter(|&s| s < devs.len());
        // A lone "device,*" has no other entry to give it a kind: it is a ratio (100%).
        prop_assume!(!(star.is_some() && devs.len() == 1));
        let expert: Vec<String> = devs.iter().enumerate().map(|(i, d)| {
            if Some(i) == star { format!("{d},*") } else { format!("{d},{}b", budgets[i]) }
        }).collect();
        let expert = expert.join(";");
        let inv = Inventory::simulate(BIG).unwrap();
        let p = plan(&blocks_from(&sizes), &options("cuda:3", 1.0, "cpu", &expert), &inv, 0).unwrap();
        prop_assert_eq!(p.mode, Mode::Bytes);
        assert_same_blocks(&p, &sizes);
        assert_exec_rule(&p);
        prop_assert!(p.warnings.iter().any(|w| w.contains("virtual_vram_gb")));
        let devices: Vec<Device> = devs.iter().map(|d| d.parse().unwrap()).collect();
        let mut ends = written_order_ends(&p, &devices);
        // The leftover also homes on cpu: a budgeted cpu whose later devices got nothing runs
        // into it in the walk above. Its own segment ends where its budget is full.
        if let Some(k) = devices.iter().position(|&d| d == Device::Cpu).filter(|&k| star != Some(k)) {
            let start = if k == 0 { 0 } else { ends[k - 1] };
            let mut used = 0;
            let mut q = start;
            while q < ends[k] && used + sizes[q] <= budgets[k] { used += sizes[q]; q += 1; }
            if q < ends[k] {
                for e in &mut ends[k..] {
                    *e = q;
                }
            }
        }
        let last = *ends.last().unwrap();
        // What is left after the listed devices goes to cpu (never the compute GPU), flagged.
        for b in &p.blocks[last..] {
            prop_assert_eq!(b.home, Device::Cpu);
        }
        prop_assert_eq!(last < sizes.len(), p.warnings.iter().any(|w| w.contains("fit no device")));
        if star.is_some() {
            prop_assert_eq!(last, sizes.len());
        }
        let greedy = |start: usize, bs: &[u64]| {
            let mut q = start;
            for &b in bs {
                let mut used = 0;
                while q < sizes.len() && used + sizes[q] <= b { used += sizes[q]; q += 1; }
            }
            q
        };
        let mut start = 0;
        for (j, &end) in ends.iter().enumerate() {
            let taken: u64 = sizes[start..end].iter().sum();
            if Some(j) == star {
                // '*' took as little as lets the rest fit the budgets after it.
                let after: Vec<u64> = budgets[j + 1..devs.len()].to_vec();
                prop_assert_eq!(greedy(end, &after), sizes.len());
                if end > start {
                    prop_assert!(greedy(end - 1, &after) < sizes.len(), "'*' took too much: {}", expert);
                }
            } else {
                prop_assert!(taken <= budgets[j], "{} over budget in {}", devs[j], expert);
                if end < sizes.len() {
                    prop_assert!(taken + sizes[end] > budgets[j], "{} stopped early in {}", devs[j], expert);
                }
            }
            start = end;
        }
        // Reported budgets are respected.
        for d in &p.devices {
            if let (Some(b), true) = (d.budget_bytes, d.device != Device::Cpu) {
                prop_assert!(d.assigned_bytes <= b);
            }
        }
    }

    #[test]
    fn virtual_vram_prefix(
        sizes in prop::collection::vec(0u64..(1u64 << 28), 1..40),
        vram in 0.0f64..4.0,
        donor in prop::sample::select(vec!["cpu", "cuda:1"]),
    ) {
        let inv = Inventory::simulate(BIG).unwrap();
        let p = plan(&blocks_from(&sizes), &options("cuda:0", vram, donor, ""), &inv, 0).unwrap();
        assert_same_blocks(&p, &sizes);
        assert_exec_rule(&p);
        let donor: Device = donor.parse().unwrap();
        let limit = (vram * (1u64 << 30) as f64) as u64;
        if vram == 0.0 {
            prop_assert_eq!(p.mode, Mode::None);
        } else {
            prop_assert_eq!(p.mode, Mode::VirtualVram);
        }
        let k = p.blocks.iter().take_while(|b| b.home == donor).count();
        prop_assert!(p.blocks[k..].iter().all(|b| b.home == Device::Cuda(0)));
        if p.mode == Mode::VirtualVram {
            let pre = prefix(&sizes);
            prop_assert!(pre[k] <= limit);
            prop_assert!(k == sizes.len() || pre[k + 1] > limit);
        } else {
            prop_assert_eq!(k, 0);
        }
    }

    #[test]
    fn fit_check_matches_residency(
        sizes in prop::collection::vec(1u64..1000, 1..30),
        frees in prop::collection::vec(0u64..20000, 3),
        reserve in 0u64..500,
        expert in prop::sample::select(vec!["", "cuda:0,50%;cpu,*", "cpu,30%;cuda:1,30%;cuda:0,40%", "cuda:1,2000b;cpu,*"]),
        vram in prop::sample::select(vec![0.0, 0.000001, 1.0]),
        execute in any::<bool>(),
    ) {
        let blocks = blocks_from(&sizes);
        let mut o = options("cuda:0", vram, "cpu", expert);
        if execute { o.donor_policy = DonorPolicy::Execute; }
        let big = Inventory::simulate("cuda:0=1t,cuda:1=1t,cpu=1t").unwrap();
        let reference = plan(&blocks, &o, &big, reserve).unwrap();
        let small = Inventory::simulate(&format!(
            "cuda:0=1t/{}b,cuda:1=1t/{}b,cpu=1t/{}b", frees[0], frees[1], frees[2]
        )).unwrap();
        let fits = reference.devices.iter().zip(&frees).all(|(d, &f)| d.resident_bytes <= f);
        match plan(&blocks, &o, &small, reserve) {
            Ok(p) => {
                prop_assert!(fits);
                prop_assert_eq!(&p.blocks, &reference.blocks);
                for d in &p.devices {
                    prop_assert!(d.resident_bytes <= d.free_bytes);
                    let exec = p.blocks.iter().any(|b| b.exec == d.device);
                    let homed: u64 = p.blocks.iter().filter(|b| b.home == d.device).map(|b| b.bytes).sum();
                    prop_assert_eq!(d.resident_bytes, homed + if exec { reserve } else { 0 });
                }
            }
            Err(e) => {
                prop_assert!(!fits);
                prop_assert_eq!(e.kind(), ErrorKind::DoesNotFit);
                prop_assert!(e.message().contains("free"));
            }
        }
    }

    #[test]
    fn parsers_never_panic_on_any_string(s in "\\PC{0,64}") {
        let _ = parse_allocations(&s);
        let _ = parse_bytes(&s);
        let _ = Inventory::simulate(&s);
        let _ = s.parse::<Device>();
        let _ = s.parse::<DonorPolicy>();
    }

    #[test]
    fn parsers_never_panic_on_grammar_like_strings(s in "[a-zA-Z0-9:,;%*./=\\- \t]{0,48}") {
        let _ = s.parse::<Device>();
        let _ = parse_bytes(&s);
        let _ = Inventory::simulate(&s);
        if let Ok(a) = parse_allocations(&s) {
            // Whatever parses is well-formed.
            prop_assert!(!a.entries.is_empty());
            let mut seen = std::collections::HashSet::new();
            for e in &a.entries {
                prop_assert!(seen.insert(e.device));
            }
        }
    }

    #[test]
    fn plan_never_panics(
        sizes in prop::collection::vec(prop_oneof![any::<u64>(), 0u64..(1u64 << 31)], 0..8),
        device in prop::option::of(prop_oneof![
            prop::sample::select(vec!["cpu", "cuda:0", "cuda:1", "cuda:2", "cuda"]).prop_map(String::from),
            "[a-z0-9: ]{0,8}",
        ]),
        vram in prop_oneof![any::<f64>(), 0.0f64..=128.0, Just(0.0)],
        donor in prop_oneof![
            prop::sample::select(vec!["cpu", "cuda:0", "cuda:1"]).prop_map(String::from),
            "[a-z0-9: ]{0,8}",
        ],
        expert in prop_oneof![
            Just(String::new()),
            "(cpu|cuda:[0-2]),([0-9]{1,3}%|[0-9]{1,2}(gb|mb|b)|0\\.[0-9]|1|\\*)(;(cpu|cuda:[0-2]),([0-9]{1,3}%|[0-9]{1,2}(gb|mb|b)|0\\.[0-9]|1|\\*)){0,3};?",
            "[a-z0-9:,;%*. ]{0,24}",
        ],
        reserve in prop_oneof![any::<u64>(), 0u64..(1u64 << 30)],
        execute in any::<bool>(),
    ) {
        let inv = Inventory::simulate("cuda:0=24GiB/20GiB,cuda:1=8GiB,cpu=64GiB").unwrap();
        let mut o = LoaderOptions { device, virtual_vram_gb: Some(vram), donor_device: donor, expert_mode_allocations: expert, ..LoaderOptions::default() };
        if execute { o.donor_policy = DonorPolicy::Execute; }
        match plan(&blocks_from(&sizes), &o, &inv, reserve) {
            Ok(p) => {
                let _ = p.to_json();
                let _ = p.render_table();
                prop_assert_eq!(p.blocks.len(), sizes.len());
                assert_exec_rule(&p);
                for d in &p.devices {
                    prop_assert!(d.resident_bytes <= d.free_bytes);
                }
            }
            Err(e) => prop_assert!(!e.message().is_empty()),
        }
    }
}

#[test]
fn plan_with_valid_random_looking_expert_strings() {
    // Fixed spot checks of the grammar through plan(): every written form works end to end.
    let inv = Inventory::simulate("cuda:0=24GiB,cuda:1=12GiB,cpu=64GiB").unwrap();
    let blocks = blocks_from(&[100, 200, 300, 400]);
    for expert in [
        "cuda:0,60%;cuda:1,30%;cpu,10%",
        " CUDA:0 , 60 % ; cpu , * ; ",
        "cuda:0,1kb;cpu,*",
        "cuda:0,0.5;cuda:1,0.5",
        "cpu,*",
    ] {
        let p = plan(&blocks, &options("cuda:0", 0.0, "cpu", expert), &inv, 0).unwrap();
        assert_eq!(p.blocks.len(), 4, "{expert}");
    }
}
