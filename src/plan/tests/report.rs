//! The plan's reports (JSON, table), what it says about silent adjustments, and its input
//! errors, on the ViT-H/14-shaped model of `tests.rs`.

use super::*;

#[test]
fn input_errors_name_field_and_choices() {
    let check = |o: LoaderOptions, kind: ErrorKind, needles: &[&str]| {
        let e = plan(&vit_h(), &o, &inv(), 0).unwrap_err();
        assert_eq!(e.kind(), kind, "{}", e.message());
        for n in needles {
            assert!(e.message().contains(n), "{:?} lacks {n:?}", e.message());
        }
    };
    check(
        opts("gpu0", 0.0, "cpu", ""),
        ErrorKind::InvalidArgument,
        &["device", "\"gpu0\"", "cuda:N"],
    );
    check(
        opts("cuda:5", 0.0, "cpu", ""),
        ErrorKind::NotFound,
        &["device", "\"cuda:5\"", "cuda:0, cuda:1, cpu"],
    );
    check(
        opts("cuda:0", 1.0, "cuda:7", ""),
        ErrorKind::NotFound,
        &["donor_device", "\"cuda:7\"", "cuda:0, cuda:1, cpu"],
    );
    check(
        opts("cuda:0", 1.0, "disk", ""),
        ErrorKind::InvalidArgument,
        &["donor_device", "\"disk\""],
    );
    for v in [-0.5, 128.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        check(
            opts("cuda:0", v, "cpu", ""),
            ErrorKind::InvalidArgument,
            &["virtual_vram_gb", "0.0 to 128.0"],
        );
    }
    assert!(plan(&vit_h(), &opts("cuda:0", 128.0, "cpu", ""), &inv(), 0).is_ok());
    check(
        opts("cuda:0", 0.0, "cpu", "cuda:0,50%;cuda:3,*"),
        ErrorKind::NotFound,
        &["\"cuda:3\"", "cuda:3,*", "cuda:0, cuda:1, cpu"],
    );
    check(
        opts("cuda:0", 0.0, "cpu", "cuda:0,50%;cpu,4gb"),
        ErrorKind::InvalidArgument,
        &["expert_mode_allocations", "\"cpu,4gb\""],
    );

    let e = plan(&[], &opts("cuda:0", 0.0, "cpu", ""), &inv(), 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let huge = vec![
        BlockSize::new(BlockKind::Embed, u64::MAX),
        BlockSize::new(BlockKind::Head, 1),
    ];
    let e = plan(&huge, &opts("cuda:0", 0.0, "cpu", ""), &inv(), 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn json_report() {
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,60%;cuda:1,30%;cpu,10%"),
        &inv(),
        64 * M,
    )
    .unwrap();
    let j = p.to_json();
    assert_eq!(j["compute_device"], "cuda:0");
    assert_eq!(j["mode"], "ratio");
    assert_eq!(j["model_bytes"], p.model_bytes);
    assert_eq!(j["donor_policy"], "stream");
    assert_eq!(j["activation_reserve_bytes"], 64 * M);
    assert_eq!(j["blocks"].as_array().unwrap().len(), 34);
    assert_eq!(j["blocks"][0]["name"], "embed");
    assert_eq!(j["blocks"][0]["home"], "cuda:0");
    assert_eq!(j["blocks"][33]["home"], "cpu");
    assert_eq!(j["blocks"][33]["exec"], "cuda:0");
    assert_eq!(j["blocks"][33]["bytes"], HEAD);
    let devs = j["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 3);
    for d in devs {
        for k in ["device", "total_bytes", "free_bytes", "assigned_bytes"] {
            assert!(d.get(k).is_some(), "{k}");
        }
    }
    assert_eq!(devs[2]["device"], "cpu");
    assert_eq!(j["warnings"].as_array().unwrap().len(), 0);
    let s = j["segments"].as_array().unwrap();
    assert_eq!(s.len(), 3);
    assert_eq!(s[1]["first"], "layer.19");
    assert_eq!(s[1]["last"], "layer.28");
    assert_eq!(s[1]["count"], 10);
    let vv = plan(&vit_h(), &opts("cuda:0", 0.5, "cpu", ""), &inv(), 0).unwrap();
    assert_eq!(vv.to_json()["mode"], "virtual_vram");
    assert_eq!(
        serde_json::to_value(Mode::VirtualVram).unwrap(),
        "virtual_vram"
    );
    assert_eq!(serde_json::to_value(Mode::None).unwrap(), "none");
}

#[test]
fn table_report() {
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 8.0, "cpu", "cuda:0,100mb;cuda:1,100mb"),
        &inv(),
        0,
    )
    .unwrap();
    let t = p.render_table();
    for needle in [
        "cuda:0",
        "cuda:1",
        "cpu",
        "embed..layer.01",
        "cuda:1 -> cuda:1",
        "100.00 MiB",
        "warnings:",
        "virtual_vram_gb",
        "mode bytes",
    ] {
        assert!(t.contains(needle), "table lacks {needle:?}:\n{t}");
    }
}

#[test]
fn render_smoke() {
    // `cargo test --lib render_smoke -- --nocapture` shows the tables.
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 8.0, "cpu", "cuda:0,60%;cuda:1,30%;cpu,10%"),
        &inv(),
        256 * M,
    )
    .unwrap();
    println!("{}", p.render_table());
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.5, "cuda:1", ""),
        &inv(),
        256 * M,
    )
    .unwrap();
    println!("{}", p.render_table());
    println!("{}", inv().render_table());
    let e = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", ""),
        &Inventory::simulate("cuda:0=1GiB,cpu=64GiB").unwrap(),
        256 * M,
    )
    .unwrap_err();
    println!("{e}");
    assert!(e.message().contains("needs 1.43 GiB"));
}

#[test]
fn silent_adjustments_are_said() {
    let warned = |p: &Plan, needle: &str| p.warnings.iter().any(|w| w.contains(needle));
    // Ratio shares that do not add up to 100 are rescaled, and the report says so.
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:0,30%;cuda:1,30%"),
        &inv(),
        0,
    )
    .unwrap();
    assert!(
        warned(&p, "add up to 60%") && warned(&p, "cuda:0 50%, cuda:1 50%"),
        "{:?}",
        p.warnings
    );
    for exact in ["cuda:0,60%;cuda:1,40%", "cuda:0,33.3%;cpu,*"] {
        let p = plan(&vit_h(), &opts("cuda:0", 0.0, "cpu", exact), &inv(), 0).unwrap();
        assert!(p.warnings.is_empty(), "{exact}: {:?}", p.warnings);
    }
    // A bytes budget above the device's memory.
    let p = plan(
        &vit_h(),
        &opts("cuda:0", 0.0, "cpu", "cuda:1,20gb;cpu,*"),
        &inv(),
        0,
    )
    .unwrap();
    assert!(
        warned(&p, "more than the device's 12.00 GiB"),
        "{:?}",
        p.warnings
    );
    // Virtual VRAM above the donor's memory.
    let small = Inventory::simulate("cuda:0=24GiB,cuda:1=2GiB,cpu=64GiB").unwrap();
    let p = plan(&vit_h(), &opts("cuda:0", 8.0, "cuda:1", ""), &small, 0).unwrap();
    assert!(
        warned(&p, "more than cuda:1's 2.00 GiB"),
        "{:?}",
        p.warnings
    );
    // donor_device = device means no donor.
    let p = plan(&vit_h(), &opts("cuda:0", 2.0, "cuda:0", ""), &inv(), 0).unwrap();
    assert_eq!(p.mode, Mode::None);
    assert!(
        warned(&p, "donor_device cuda:0 is the compute device"),
        "{:?}",
        p.warnings
    );
    // ... but a CPU-only run on the defaults (donor cpu = device cpu) stays quiet.
    let cpu_only = Inventory::simulate("cpu=64GiB").unwrap();
    let p = plan(&vit_h(), &LoaderOptions::default(), &cpu_only, 0).unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // virtual_vram_gb is "ignored" only when the user set it.
    let unset = LoaderOptions {
        device: Some("cuda:0".into()),
        expert_mode_allocations: "cuda:0,50%;cpu,*".into(),
        ..LoaderOptions::default()
    };
    let p = plan(&vit_h(), &unset, &inv(), 0).unwrap();
    assert!(!warned(&p, "virtual_vram_gb"), "{:?}", p.warnings);
    let set = LoaderOptions {
        virtual_vram_gb: Some(4.0),
        ..unset
    };
    let p = plan(&vit_h(), &set, &inv(), 0).unwrap();
    assert!(
        warned(&p, "virtual_vram_gb = 4 was ignored"),
        "{:?}",
        p.warnings
    );
}
