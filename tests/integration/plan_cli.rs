//! `plan --json` on a header-only ViT-H/14 f16 file (a sparse file with a true header):
//! the seed's examples, the report, and the errors.

use std::path::PathBuf;

use crate::common::*;
use serde_json::Value;

/// Writes a sparse ViT-H/14 f16 safetensors file (1.26 GB apparent, a few KB on disk).
fn vit_h(tag: &str) -> PathBuf {
    let path = temp_dir(&format!("vit_h_{tag}")).join("vit-h-14.safetensors");
    write_sparse_safetensors(&path, &clip_tensors(1280, 32, 5120, 257, 1024));
    path
}

const DEVICES: &str = "cuda:0=24GiB,cuda:1=12GiB/10GiB,cpu=64GiB";

fn plan(model: &PathBuf, extra: &[&str]) -> Value {
    let o = run(bin()
        .args(["plan", "--json", "--model"])
        .arg(model)
        .args(["--simulate-devices", DEVICES])
        .args(extra));
    assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn homes(p: &Value) -> Vec<(String, String, String)> {
    p["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["home"].as_str().unwrap().to_string(),
                b["exec"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(p: &Value, home: &str) -> usize {
    homes(p).iter().filter(|(_, h, _)| h == home).count()
}

#[test]
fn seed_examples() {
    let m = vit_h("seed");
    let t = std::time::Instant::now();
    // cuda:0 computes; 8 GiB of virtual VRAM from cuda:1 takes the longest prefix that fits.
    let p = plan(
        &m,
        &[
            "--device",
            "cuda:0",
            "--virtual-vram-gb",
            "8",
            "--donor-device",
            "cuda:1",
        ],
    );
    assert_eq!(p["mode"], "virtual_vram");
    assert_eq!(p["compute_device"], "cuda:0");
    assert_eq!(p["blocks"].as_array().unwrap().len(), 34);
    assert_eq!(p["model_bytes"].as_u64().unwrap(), 1_264_153_600);
    assert!(homes(&p)
        .iter()
        .all(|(_, h, e)| h == "cuda:1" && e == "cuda:1"));
    // 0.5 GiB moves a prefix; the end stays on the compute device.
    let p = plan(
        &m,
        &[
            "--device",
            "cuda:0",
            "--virtual-vram-gb",
            "0.5",
            "--donor-device",
            "cuda:1",
        ],
    );
    let h = homes(&p);
    assert_eq!(h[0].1, "cuda:1");
    assert_eq!(h[33].1, "cuda:0");
    let prefix = h.iter().take_while(|(_, home, _)| home == "cuda:1").count();
    assert_eq!(count(&p, "cuda:1"), prefix, "contiguous prefix");

    // Ratio: consecutive segments in the order written; cpu blocks stream to cuda:0.
    let p = plan(
        &m,
        &["--expert-mode-allocations", "cuda:0,60%;cuda:1,30%;cpu,10%"],
    );
    assert_eq!(p["mode"], "ratio");
    assert_eq!(
        (count(&p, "cuda:0"), count(&p, "cuda:1"), count(&p, "cpu")),
        (20, 10, 4)
    );
    let h = homes(&p);
    assert_eq!(h[0].1, "cuda:0");
    assert_eq!(h[33], ("head".into(), "cpu".into(), "cuda:0".into()));
    let p = plan(
        &m,
        &[
            "--expert-mode-allocations",
            "cuda:0,60%;cuda:1,30%;cpu,10%",
            "--donor-policy",
            "execute",
        ],
    );
    assert_eq!(homes(&p)[33].2, "cpu");

    // Bytes with a remainder: 4 GiB holds the whole 1.18 GiB model.
    let p = plan(
        &m,
        &["--expert-mode-allocations", "cuda:0,4gb;cuda:1,2gb;cpu,*"],
    );
    assert_eq!(p["mode"], "bytes");
    assert_eq!(count(&p, "cuda:0"), 34);
    // Smaller budgets: each device fills up in order and cpu takes the rest.
    let p = plan(
        &m,
        &[
            "--expert-mode-allocations",
            "cuda:0,0.5gb;cuda:1,256mb;cpu,*",
        ],
    );
    let h = homes(&p);
    let n0 = count(&p, "cuda:0");
    let n1 = count(&p, "cuda:1");
    assert!(n0 > 0 && n1 > 0 && count(&p, "cpu") > 0);
    assert!(h[..n0].iter().all(|x| x.1 == "cuda:0"));
    assert!(h[n0..n0 + n1].iter().all(|x| x.1 == "cuda:1"));
    let bytes: u64 = p["blocks"].as_array().unwrap()[..n0]
        .iter()
        .map(|b| b["bytes"].as_u64().unwrap())
        .sum();
    assert!(bytes <= 512 << 20);

    // The mixed case: the expert string decides and the report says virtual VRAM was ignored.
    let p = plan(
        &m,
        &[
            "--expert-mode-allocations",
            "cuda:0,50%;cpu,*",
            "--virtual-vram-gb",
            "8",
            "--donor-device",
            "cuda:1",
        ],
    );
    assert_eq!(p["mode"], "ratio");
    assert_eq!(count(&p, "cuda:1"), 0);
    assert_eq!(count(&p, "cuda:0"), 17);
    let warnings = p["warnings"].to_string();
    assert!(warnings.contains("virtual_vram_gb"), "{warnings}");

    // Fraction of each device's total memory.
    let p = plan(&m, &["--expert-mode-allocations", "cuda:1,0.05;cuda:0,1"]);
    assert_eq!(p["mode"], "fraction");
    assert_eq!(homes(&p)[0].1, "cuda:1");

    // The report lists devices with assigned bytes.
    let devs = p["devices"].as_array().unwrap();
    let assigned: u64 = devs
        .iter()
        .map(|d| d["assigned_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(assigned, 1_264_153_600);
    // Planning reads only the header: eight plans of a 1.26 GB model in well under a few seconds.
    assert!(t.elapsed().as_secs_f64() < 20.0);
}

#[test]
fn table_report_and_errors() {
    let m = vit_h("table");
    let o = run(bin().args(["plan", "--model"]).arg(&m).args([
        "--simulate-devices",
        DEVICES,
        "--expert-mode-allocations",
        "cuda:0,60%;cuda:1,30%;cpu,10%",
    ]));
    assert!(o.status.success());
    let table = String::from_utf8_lossy(&o.stdout);
    for needle in ["cuda:0", "cuda:1", "embed..", "head", "cpu -> cuda:0"] {
        assert!(table.contains(needle), "{needle} not in\n{table}");
    }
    let fails = |extra: &[&str], needle: &str| {
        let o = run(bin()
            .args(["plan", "--json", "--model"])
            .arg(&m)
            .args(["--simulate-devices", DEVICES])
            .args(extra));
        assert!(!o.status.success(), "{extra:?}");
        let e = stderr(&o);
        assert!(e.contains(needle), "{needle:?} not in {e}");
        assert!(!e.contains("panicked"));
    };
    fails(
        &["--expert-mode-allocations", "cuda:0,60%;cuda:1"],
        "cuda:1",
    );
    fails(
        &["--expert-mode-allocations", "cuda:0,60%;cuda:1,2gb"],
        "cuda:1,2gb",
    );
    fails(&["--expert-mode-allocations", "cuda:2,50%;cpu,*"], "cuda:2");
    fails(&["--expert-mode-allocations", "cuda:0,1.5"], "cuda:0,1.5");
    fails(&["--virtual-vram-gb", "128.5"], "128");
    fails(&["--device", "cuda:9"], "cuda:9");
    fails(&["--donor-device", "gpu"], "gpu");
    // Does not fit: 1.18 GiB of weights on a 1 GiB GPU.
    let o = run(bin().args(["plan", "--json", "--model"]).arg(&m).args([
        "--simulate-devices",
        "cuda:0=1GiB",
        "--virtual-vram-gb",
        "0",
    ]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cuda:0"), "{}", stderr(&o));
    // inspect reads the same header: the table family, without a config.json.
    let o = run(bin().args(["inspect", "--json", "--model"]).arg(&m));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["family"], "ViT-H/14");
    assert_eq!(v["blocks"].as_array().unwrap().len(), 34);
}

#[test]
fn devices_lists_the_machine_and_simulations() {
    let o = run(bin().args(["devices", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.to_string().contains("\"cpu\""));
    let o = run(bin().args([
        "devices",
        "--json",
        "--simulate-devices",
        "cuda:0=24GiB,cuda:1=12GiB/10GiB",
    ]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.to_string().contains("cuda:1"));
}

#[test]
fn leftover_goes_to_cpu_and_adjustments_are_said() {
    let m = vit_h("leftover");
    // The example: 256 MiB on each GPU of a 1.2 GiB model; the rest homes on cpu.
    let p = plan(
        &m,
        &[
            "--device",
            "cuda:0",
            "--expert-mode-allocations",
            "cuda:0,256mb;cuda:1,256mb",
        ],
    );
    let h = homes(&p);
    let (n0, n1) = (count(&p, "cuda:0"), count(&p, "cuda:1"));
    assert!(n0 > 0 && n1 > 0 && n0 + n1 < h.len());
    assert!(h[n0 + n1..].iter().all(|x| x.1 == "cpu" && x.2 == "cuda:0"));
    for d in p["devices"].as_array().unwrap() {
        if d["device"] != "cpu" {
            assert!(d["assigned_bytes"].as_u64().unwrap() <= 256 << 20, "{d}");
        }
    }
    let warnings = p["warnings"].to_string();
    assert!(
        warnings.contains("..head") && warnings.contains("placed on cpu"),
        "{warnings}"
    );
    // `--clip-name` (ComfyUI's name for the model input) is an alias of `--model`; the
    // default virtual_vram_gb is not reported as ignored, a value the user wrote is.
    let expert = [
        "plan",
        "--json",
        "--simulate-devices",
        DEVICES,
        "--expert-mode-allocations",
        "cuda:0,50%;cpu,*",
    ];
    let o = run(bin().args(expert).arg("--clip-name").arg(&m));
    assert!(o.status.success(), "{}", stderr(&o));
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        p["warnings"].as_array().unwrap().len(),
        0,
        "{}",
        p["warnings"]
    );
    let o = run(bin()
        .args(expert)
        .args(["--virtual-vram-gb", "4", "--model"])
        .arg(&m));
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        p["warnings"]
            .to_string()
            .contains("virtual_vram_gb = 4 was ignored"),
        "{}",
        p["warnings"]
    );
}
