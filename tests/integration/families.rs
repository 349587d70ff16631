//! Every key-table family (contract §2.1, §2.1b) detected from the keys alone, with no
//! `config.json`, on header-only files in the real files' layouts; and the embed block of
//! SigLIP so400m/14-384 (S = 384 is not a multiple of P = 14) run at its true size.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// DINOv2 in the original layout ComfyUI's clip_vision folder holds (no prefix).
fn dinov2(d: usize, layers: usize, hidden: usize, swiglu: bool) -> Tensors {
    let mut t: Tensors = vec![
        ("embeddings.cls_token".into(), vec![1, 1, d]),
        ("embeddings.mask_token".into(), vec![1, d]),
        ("embeddings.position_embeddings".into(), vec![1, 1370, d]),
        (
            "embeddings.patch_embeddings.projection.weight".into(),
            vec![d, 3, 14, 14],
        ),
        (
            "embeddings.patch_embeddings.projection.bias".into(),
            vec![d],
        ),
        ("layernorm.weight".into(), vec![d]),
        ("layernorm.bias".into(), vec![d]),
    ];
    for l in 0..layers {
        let p = format!("encoder.layer.{l}.");
        for n in ["norm1", "norm2"] {
            t.push((format!("{p}{n}.weight"), vec![d]));
            t.push((format!("{p}{n}.bias"), vec![d]));
        }
        for n in [
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
        ] {
            t.push((format!("{p}{n}.weight"), vec![d, d]));
            t.push((format!("{p}{n}.bias"), vec![d]));
        }
        let (fin, fout, rows) = if swiglu {
            ("weights_in", "weights_out", 2 * hidden)
        } else {
            ("fc1", "fc2", hidden)
        };
        t.push((format!("{p}mlp.{fin}.weight"), vec![rows, d]));
        t.push((format!("{p}mlp.{fin}.bias"), vec![rows]));
        t.push((format!("{p}mlp.{fout}.weight"), vec![d, hidden]));
        t.push((format!("{p}mlp.{fout}.bias"), vec![d]));
        t.push((format!("{p}layer_scale1.lambda1"), vec![d]));
        t.push((format!("{p}layer_scale2.lambda1"), vec![d]));
    }
    t
}

/// DINOv3 as ComfyUI's clip_vision files hold it (`layer.N.…`, no key bias, 4 registers).
fn dinov3(d: usize, layers: usize, hidden: usize, gated: bool) -> Tensors {
    let mut t: Tensors = vec![
        ("embeddings.cls_token".into(), vec![1, 1, d]),
        ("embeddings.mask_token".into(), vec![1, 1, d]),
        ("embeddings.register_tokens".into(), vec![1, 4, d]),
        (
            "embeddings.patch_embeddings.weight".into(),
            vec![d, 3, 16, 16],
        ),
        ("embeddings.patch_embeddings.bias".into(), vec![d]),
        ("norm.weight".into(), vec![d]),
        ("norm.bias".into(), vec![d]),
    ];
    for l in 0..layers {
        let p = format!("layer.{l}.");
        for n in ["norm1", "norm2"] {
            t.push((format!("{p}{n}.weight"), vec![d]));
            t.push((format!("{p}{n}.bias"), vec![d]));
        }
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            t.push((format!("{p}attention.{n}.weight"), vec![d, d]));
            if n != "k_proj" {
                t.push((format!("{p}attention.{n}.bias"), vec![d]));
            }
        }
        let ins: &[&str] = if gated {
            &["gate_proj", "up_proj"]
        } else {
            &["up_proj"]
        };
        for n in ins {
            t.push((format!("{p}mlp.{n}.weight"), vec![hidden, d]));
            t.push((format!("{p}mlp.{n}.bias"), vec![hidden]));
        }
        t.push((format!("{p}mlp.down_proj.weight"), vec![d, hidden]));
        t.push((format!("{p}mlp.down_proj.bias"), vec![d]));
        t.push((format!("{p}layer_scale1.lambda1"), vec![d]));
        t.push((format!("{p}layer_scale2.lambda1"), vec![d]));
    }
    t
}

fn so400m(patch: usize, positions: usize) -> Tensors {
    vit_tensors(&Vit {
        siglip: true,
        d: 1152,
        layers: 27,
        mlp: 4304,
        patch,
        positions,
        proj: 0,
    })
}

/// SigLIP2 so400m naflex as google/siglip2-so400m-patch16-naflex holds it (the layout
/// ComfyUI's clip_vision_siglip2_base_naflex.json loads): a `Linear` patch embedding
/// `[1152, 3·16²]`, a 256-row position table (16 × 16), and, when `head`, the
/// attention-pooling head.
fn so400m_naflex(head: bool) -> Tensors {
    let d = 1152;
    let mut t: Tensors = so400m(16, 256)
        .into_iter()
        .filter(|(n, _)| !n.starts_with("vision_model.head."))
        .map(|(n, s)| match n.as_str() {
            "vision_model.embeddings.patch_embedding.weight" => (n, vec![d, 3 * 16 * 16]),
            _ => (n, s),
        })
        .collect();
    if head {
        t.push(("vision_model.head.probe".into(), vec![1, 1, d]));
        t.push((
            "vision_model.head.attention.in_proj_weight".into(),
            vec![3 * d, d],
        ));
        t.push((
            "vision_model.head.attention.in_proj_bias".into(),
            vec![3 * d],
        ));
        for (n, shape) in [
            ("attention.out_proj", vec![d, d]),
            ("mlp.fc1", vec![4304, d]),
            ("mlp.fc2", vec![d, 4304]),
        ] {
            let rows = shape[0];
            t.push((format!("vision_model.head.{n}.weight"), shape));
            t.push((format!("vision_model.head.{n}.bias"), vec![rows]));
        }
        t.push(("vision_model.head.layernorm.weight".into(), vec![d]));
        t.push(("vision_model.head.layernorm.bias".into(), vec![d]));
    }
    t
}

#[test]
fn the_so400m_naflex_shape_is_detected_from_keys_alone() {
    // ComfyUI's rule: width 1152 and a 2-D patch embedding. No config.json.
    let v = inspect(&sparse("so400m_naflex", &so400m_naflex(true)));
    let c = &v["config"];
    assert_eq!(v["family"], "SigLIP2 so400m/16 naflex");
    assert_eq!(c["kind"], "siglip2");
    assert_eq!(c["source"], "key table");
    assert_eq!(
        (&c["hidden_size"], &c["num_layers"], &c["num_heads"]),
        (&1152.into(), &27.into(), &16.into())
    );
    assert_eq!(
        (&c["patch_size"], &c["num_patches"]),
        (&16.into(), &256.into())
    );
    // The largest grid's tokens: what the planner sizes activations for.
    assert_eq!(c["tokens"], 256);
    assert_eq!(c["image_size"], 0);
    assert_eq!(c["attention_pool"], true);
    assert!((c["layer_norm_eps"].as_f64().unwrap() - 1e-5).abs() < 1e-12);
    assert_eq!(
        v["outputs"],
        serde_json::json!([
            "last_hidden_state",
            "image_embeds",
            "penultimate_hidden_states"
        ])
    );
    assert_eq!(v["blocks"].as_array().unwrap().len(), 29);
    // Without the pooling head the tower still loads, without image_embeds (ComfyUI never
    // reads the head).
    let v = inspect(&sparse("so400m_naflex_headless", &so400m_naflex(false)));
    assert_eq!(v["family"], "SigLIP2 so400m/16 naflex");
    assert!(v["config"].get("attention_pool").is_none());
    assert_eq!(
        v["outputs"],
        serde_json::json!(["last_hidden_state", "penultimate_hidden_states"])
    );
    // The planner sizes activations for the largest grid (256 tokens), like a fixed tower of
    // 256 tokens.
    let m = distorch_vision::model::Model::open(&sparse("so400m_naflex_lib", &so400m_naflex(true)))
        .unwrap();
    let reserve = distorch_vision::loader::activation_reserve(&m);
    let (t, d, i, h) = (256u64, 1152u64, 4304u64, 16u64);
    let per_image = 4 * t * d + 2 * t * i + 2 * h * t * t;
    assert_eq!(
        reserve,
        per_image * 4 * distorch_vision::loader::RESERVE_BATCH
    );
    let text = run(bin()
        .args(["inspect", "--model"])
        .arg(sparse("so400m_naflex_text", &so400m_naflex(true))));
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("SigLIP2 so400m/16 naflex"), "{out}");
    assert!(out.contains("patches<=256"), "{out}");
}

/// Writes `tensors` alone in a fresh folder (no config.json) and returns the file.
fn sparse(tag: &str, tensors: &Tensors) -> PathBuf {
    let dir = temp_dir(&format!("family_{tag}"));
    let path = dir.join(format!("{tag}.safetensors"));
    write_sparse_safetensors(&path, tensors);
    assert!(!dir.join("config.json").exists());
    path
}

fn inspect(path: &Path) -> Value {
    let o = run(bin().args(["inspect", "--json", "--model"]).arg(path));
    assert!(o.status.success(), "{}: {}", path.display(), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn every_key_table_family_is_detected_from_keys_alone() {
    // What inspect must say: family, D, layers, heads, S, P, tokens.
    type Expect = (&'static str, [u64; 6]);
    let cases: Vec<(&str, Tensors, Expect)> = vec![
        (
            "vit_l14",
            clip_tensors(1024, 24, 4096, 257, 768),
            ("ViT-L/14", [1024, 24, 16, 224, 14, 257]),
        ),
        (
            "vit_l14_336",
            clip_tensors(1024, 24, 4096, 577, 768),
            ("ViT-L/14-336", [1024, 24, 16, 336, 14, 577]),
        ),
        (
            "vit_h14",
            clip_tensors(1280, 32, 5120, 257, 1024),
            ("ViT-H/14", [1280, 32, 16, 224, 14, 257]),
        ),
        (
            "vit_bigg14",
            clip_tensors(1664, 48, 8192, 257, 1280),
            ("ViT-bigG/14", [1664, 48, 16, 224, 14, 257]),
        ),
        (
            "so400m_14_384",
            so400m(14, 729),
            ("SigLIP so400m/14-384", [1152, 27, 16, 384, 14, 729]),
        ),
        (
            "so400m_16_512",
            so400m(16, 1024),
            ("SigLIP so400m/16-512", [1152, 27, 16, 512, 16, 1024]),
        ),
        (
            "dinov2_large",
            dinov2(1024, 24, 4096, false),
            ("DINOv2 large/14", [1024, 24, 16, 518, 14, 1370]),
        ),
        (
            "dinov2_giant",
            dinov2(1536, 40, 4096, true),
            ("DINOv2 giant/14", [1536, 40, 24, 518, 14, 1370]),
        ),
        // 1 + 4 registers + (1024/16)², and + (224/16)².
        (
            "dinov3_vith",
            dinov3(1280, 32, 5120, true),
            ("DINOv3 ViT-H+/16", [1280, 32, 20, 1024, 16, 4101]),
        ),
        (
            "dinov3_large",
            dinov3(1024, 24, 4096, false),
            ("DINOv3 large/16", [1024, 24, 16, 224, 16, 201]),
        ),
    ];
    for (tag, tensors, (family, [d, layers, heads, s, p, tokens])) in cases {
        let v = inspect(&sparse(tag, &tensors));
        let c = &v["config"];
        assert_eq!(v["family"], family, "{tag}");
        assert_eq!(c["source"], "key table", "{tag}");
        assert_eq!(c["hidden_size"], d, "{tag}");
        assert_eq!(c["num_layers"], layers, "{tag}");
        assert_eq!(c["num_heads"], heads, "{tag}");
        assert_eq!(c["image_size"], s, "{tag}");
        assert_eq!(c["patch_size"], p, "{tag}");
        assert_eq!(c["tokens"], tokens, "{tag}");
        // ⌊S/P⌋² patches (+ the class token but for SigLIP, + DINOv3's 4 registers).
        let class = u64::from(!tag.starts_with("so400m"));
        let registers = if tag.starts_with("dinov3") { 4 } else { 0 };
        assert_eq!((s / p).pow(2) + class + registers, tokens, "{tag}");
        assert_eq!(
            v["blocks"].as_array().unwrap().len() as u64,
            layers + 2,
            "{tag}"
        );
        assert_eq!(
            v["outputs"],
            serde_json::json!([
                "last_hidden_state",
                "image_embeds",
                "penultimate_hidden_states"
            ]),
            "{tag}"
        );
        assert_eq!(
            v["outputs_on_request"],
            serde_json::json!(["all_hidden_states"])
        );
        let (mean, eps) = if tag.starts_with("dinov2") {
            (0.485, 1e-6)
        } else if tag.starts_with("dinov3") {
            (0.485, 1e-5)
        } else if tag.starts_with("so400m") {
            (0.5, 1e-5)
        } else {
            (0.48145466, 1e-5)
        };
        assert!(
            (c["layer_norm_eps"].as_f64().unwrap() - eps).abs() < 1e-9,
            "{tag}"
        );
        let m =
            distorch_vision::model::Model::open(&sparse(&format!("{tag}_lib"), &tensors)).unwrap();
        assert!((m.config.mean_std().0[0] - mean).abs() < 1e-7, "{tag}");
    }
    // DINOv3 ViT-H+'s gated MLP (silu) and no key bias.
    let v = inspect(&sparse("dinov3_vith_mlp", &dinov3(1280, 32, 5120, true)));
    assert_eq!(v["config"]["mlp"], "gated");
    assert_eq!(v["config"]["activation"], "silu");
    assert_eq!(v["config"]["registers"], 4);
    // SwiGLU widths of the giant: weights_in [2·4096, D].
    let v = inspect(&sparse("dinov2_giant_mlp", &dinov2(1536, 40, 4096, true)));
    assert_eq!(v["config"]["mlp"], "swiglu");
    assert_eq!(v["config"]["intermediate_size"], 4096);
    // LLaVA's ViT-L/14-336 keeps its projector and adds mm_projected.
    let mut llava = clip_tensors(1024, 24, 4096, 577, 768);
    llava.push((
        "multi_modal_projector.linear_1.weight".into(),
        vec![4096, 1024],
    ));
    llava.push(("multi_modal_projector.linear_1.bias".into(), vec![4096]));
    llava.push((
        "multi_modal_projector.linear_2.weight".into(),
        vec![4096, 4096],
    ));
    llava.push(("multi_modal_projector.linear_2.bias".into(), vec![4096]));
    let v = inspect(&sparse("llava_336", &llava));
    assert_eq!(v["family"], "ViT-L/14-336");
    assert_eq!(v["config"]["llava"], true);
    assert_eq!(v["outputs"][3], "mm_projected");
}

#[test]
fn a_family_file_missing_a_tensor_or_with_a_wrong_table_is_refused_by_name() {
    // DINOv2 large without one layer scale: named, not run on missing weights.
    let mut t = dinov2(1024, 24, 4096, false);
    t.retain(|(n, _)| n != "encoder.layer.5.layer_scale1.lambda1");
    let o = run(bin()
        .args(["inspect", "--model"])
        .arg(sparse("dinov2_missing", &t)));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("encoder.layer.5.layer_scale1.lambda1"), "{e}");
    // so400m with a 256-row table but a 4-D patch convolution (not naflex) is not mistaken
    // for /14-384.
    let o = run(bin()
        .args(["inspect", "--model"])
        .arg(sparse("so400m_256", &so400m(16, 256))));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("256") && e.contains("729"), "{e}");
    // A naflex file without one of its head tensors is refused by name.
    let mut t = so400m_naflex(true);
    t.retain(|(n, _)| n != "vision_model.head.mlp.fc2.bias");
    let o = run(bin()
        .args(["inspect", "--model"])
        .arg(sparse("naflex_missing", &t)));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("vision_model.head.mlp.fc2.bias"),
        "{}",
        stderr(&o)
    );
    // No known key at all: the message says what was looked for.
    let o = run(bin()
        .args(["inspect", "--model"])
        .arg(sparse("unknown", &vec![("foo.weight".into(), vec![4, 4])])));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("layer_scale2.lambda1") && e.contains("layers.{47,30,22}"),
        "{e}"
    );
}

#[test]
fn so400m_14_384_embed_block_yields_729_tokens() {
    // The real so400m/14-384 embed graph, its weights read from the (zero) sparse file: the
    // stride-14 convolution over 384 px gives 27 × 27 patches and drops 6 pixels.
    use distorch_vision::export::blocks;
    use ort::session::Session;
    use prost::Message;
    let path = sparse("so400m_embed", &so400m(14, 729));
    let model = distorch_vision::model::Model::open(&path).unwrap();
    let dir = path.parent().unwrap();
    std::fs::hard_link(&path, dir.join("weights.safetensors")).unwrap();
    let (proto, _) = blocks::block_graph(
        &model,
        distorch_vision::model::BlockKind::Embed,
        "weights.safetensors",
        false,
        distorch_vision::export::ComputeDtype::Fp32,
    );
    std::fs::write(dir.join("embed.onnx"), proto.encode_to_vec()).unwrap();
    let env = distorch_vision::runtime::environment().unwrap();
    let session = Session::builder(&env).unwrap();
    // ONNX Runtime's CPU provider named: with the OpenVINO plugin registered in this process
    // (other tests), a session naming none would be placed on OpenVINO, in bf16.
    let mut session = distorch_vision::runtime::engine::mlas(session)
        .unwrap()
        .commit_from_file(dir.join("embed.onnx"))
        .unwrap();
    let px = ndarray::Array4::<f32>::zeros((1, 3, 384, 384));
    let input = ort::value::TensorRef::from_array_view(px.view()).unwrap();
    let out = session.run(ort::inputs![input]).unwrap();
    let e = out[0].try_extract_array::<f32>().unwrap();
    assert_eq!(e.shape(), &[1, 729, 1152]);
    // Pixels of another size are refused before anything runs.
    let e = model
        .check_pixels(&[1, 3, 378, 378])
        .unwrap_err()
        .to_string();
    assert!(e.contains("384"), "{e}");
}
