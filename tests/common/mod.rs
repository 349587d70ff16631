//! Shared helpers of the integration tests; `capi` holds what the `capi_*` tests share.
#![allow(dead_code)]

pub mod capi;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use distorch_vision::model::SafeTensors;

pub const FIXTURES: &[&str] = &[
    "clip_quickgelu_f32",
    "clip_gelu_f16",
    "clip_bf16",
    "open_clip_f32",
    "siglip_f32",
    "llava_f32",
    "siglip_s36_p8_f32",
    "dinov2_swiglu_f32",
    "dinov2_gelu_f32",
    "dinov3_gelu_f32",
    "dinov3_gated_f32",
    "siglip2_naflex_f32",
];

/// Outputs computed only when asked for; fixtures' `expected.safetensors` may hold them.
pub const ON_REQUEST: &[&str] = &["all_hidden_states"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

/// The CLI, its exports kept in a folder of the tests' own (under target/) unless a test says
/// otherwise: tests never write into the checkout's graphs/ or the user's cache.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_distorch-vision"));
    c.env("DISTORCH_GRAPHS_DIR", test_graphs_dir());
    c
}

/// Where CLI runs of the tests keep their exports (see [`bin`]).
pub fn test_graphs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-graphs")
}

/// A fresh temporary folder under target/, removed and recreated.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = root().join("target/test-tmp").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

/// Whether this CPU is Intel's (`/proc/cpuinfo`, read independently of the library). The
/// OpenVINO plugin (onnxruntime-ep-openvino 1.8.1) offers Intel devices only: on another
/// vendor's CPU it registers and lists no CPU device, and what needs it is refused.
pub fn intel_cpu() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| {
            t.lines()
                .any(|l| l.starts_with("vendor_id") && l.ends_with("GenuineIntel"))
        })
        .unwrap_or(false)
}

/// On a CPU the OpenVINO plugin does not serve: the refusal `what` (`cpu_engine: openvino`,
/// `dtype: bf16`) names the reason and the way out.
pub fn assert_openvino_cpu_refused(message: &str, what: &str) {
    assert!(
        message.contains(what)
            && message.contains("offers Intel devices only")
            && message.contains("mlas"),
        "{message}"
    );
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every f32 tensor of a safetensors file, by name (a naflex output's I64 `spatial_shapes` is
/// left out: see [`read_any_tensors`]).
pub fn read_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let st = SafeTensors::open(path).unwrap();
    st.tensors()
        .iter()
        .filter(|(_, info)| info.dtype == distorch_vision::model::DType::F32)
        .map(|(name, info)| {
            let bytes = st.data(info).unwrap();
            let v = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.clone(), info.shape.clone(), v)
        })
        .collect()
}

/// Every tensor of a safetensors file (F32, I64, I32 or U8), its values as f64, by name.
pub fn read_any_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    use distorch_vision::model::DType;
    let st = SafeTensors::open(path).unwrap();
    st.tensors()
        .iter()
        .map(|(name, info)| {
            let b = st.data(info).unwrap();
            let v: Vec<f64> = match info.dtype {
                DType::F32 => b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                DType::I64 => b
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                DType::I32 => b
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                DType::U8 => b.iter().map(|&c| c as f64).collect(),
                other => panic!("{name}: {other:?}"),
            };
            (name.clone(), info.shape.clone(), v)
        })
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Compares every tensor of `actual` with the same-named tensor of `expected`.
pub fn assert_close(actual: &Path, expected: &Path, tol: f32) -> f32 {
    let exp = read_tensors(expected);
    let act = read_tensors(actual);
    assert!(!act.is_empty(), "{} holds no tensors", actual.display());
    let mut worst = 0.0f32;
    for (name, shape, values) in &act {
        let (_, eshape, evalues) = exp
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no expected tensor {name}"));
        assert_eq!(shape, eshape, "{name}: shape");
        let d = max_abs_diff(values, evalues);
        assert!(
            d <= tol,
            "{name}: max |diff| {d} > {tol} ({})",
            actual.display()
        );
        worst = worst.max(d);
    }
    worst
}

/// Writes a safetensors file from a raw header JSON and a data section (for broken files).
pub fn write_raw_safetensors(path: &Path, header: &str, data_len: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(path, bytes).unwrap();
}

/// Writes a header-only safetensors file: a true header for F16 `tensors`, the data a sparse
/// hole (gigabytes apparent, a few KB on disk). Real model files' layouts, no weights.
pub fn write_sparse_safetensors(path: &Path, tensors: &[(String, Vec<usize>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let n = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    let header_len = bytes.len() as u64;
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(header_len + offset as u64).unwrap();
}

/// Tensor names and shapes of a model file.
pub type Tensors = Vec<(String, Vec<usize>)>;

/// CLIP / SigLIP in the HF layout (contract §2.2).
pub struct Vit {
    pub siglip: bool,
    pub d: usize,
    pub layers: usize,
    pub mlp: usize,
    pub patch: usize,
    pub positions: usize,
    pub proj: usize,
}

/// The tensors of a CLIP / SigLIP vision tower with these sizes (for sparse header-only files).
pub fn vit_tensors(v: &Vit) -> Tensors {
    let d = v.d;
    let mut t: Tensors = vec![
        (
            "vision_model.embeddings.patch_embedding.weight".into(),
            vec![d, 3, v.patch, v.patch],
        ),
        (
            "vision_model.embeddings.position_embedding.weight".into(),
            vec![v.positions, d],
        ),
        ("vision_model.post_layernorm.weight".into(), vec![d]),
        ("vision_model.post_layernorm.bias".into(), vec![d]),
    ];
    if v.siglip {
        t.push((
            "vision_model.embeddings.patch_embedding.bias".into(),
            vec![d],
        ));
        // The MAP head real SigLIP files carry; it is ignored.
        t.push(("vision_model.head.probe".into(), vec![1, 1, d]));
        t.push(("vision_model.head.mlp.fc1.weight".into(), vec![v.mlp, d]));
    } else {
        t.push(("vision_model.embeddings.class_embedding".into(), vec![d]));
        t.push(("vision_model.pre_layrnorm.weight".into(), vec![d]));
        t.push(("vision_model.pre_layrnorm.bias".into(), vec![d]));
        t.push(("visual_projection.weight".into(), vec![v.proj, d]));
    }
    for l in 0..v.layers {
        let p = format!("vision_model.encoder.layers.{l}.");
        for n in ["layer_norm1", "layer_norm2"] {
            t.push((format!("{p}{n}.weight"), vec![d]));
            t.push((format!("{p}{n}.bias"), vec![d]));
        }
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            t.push((format!("{p}self_attn.{n}.weight"), vec![d, d]));
            t.push((format!("{p}self_attn.{n}.bias"), vec![d]));
        }
        t.push((format!("{p}mlp.fc1.weight"), vec![v.mlp, d]));
        t.push((format!("{p}mlp.fc1.bias"), vec![v.mlp]));
        t.push((format!("{p}mlp.fc2.weight"), vec![d, v.mlp]));
        t.push((format!("{p}mlp.fc2.bias"), vec![d]));
    }
    t
}

/// A CLIP tower with patch 14 (ViT-L/H/bigG shapes), for sparse header-only files.
pub fn clip_tensors(d: usize, layers: usize, mlp: usize, positions: usize, proj: usize) -> Tensors {
    vit_tensors(&Vit {
        siglip: false,
        d,
        layers,
        mlp,
        patch: 14,
        positions,
        proj,
    })
}
