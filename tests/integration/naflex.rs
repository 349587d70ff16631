//! SigLIP2 naflex (contract §2.1b, §3, §4b): parity with Hugging Face's `Siglip2VisionModel`
//! given the same patches, grids and mask, at six aspect ratios (1:4 and 4:1 among them) in one
//! padded batch; a mixed batch equals each image alone; image-level parity with HF's processor
//! and model; ComfyUI's `siglip2_preprocess` reproduced bit for bit.

use crate::common::*;
use distorch_vision::image::{Grid, Pixels, PixelsView};
use distorch_vision::loader::{ClipVision, LoadOptions};
use distorch_vision::plan::LoaderOptions;

const NAME: &str = "siglip2_naflex_f32";
const TOL: f32 = 1e-4;

fn load(graphs: &std::path::Path) -> ClipVision {
    ClipVision::load(&LoadOptions {
        clip_vision: fixture(NAME)
            .join("model.safetensors")
            .display()
            .to_string(),
        loader: LoaderOptions {
            device: Some("cpu".into()),
            ..Default::default()
        },
        graphs_dir: Some(graphs.to_path_buf()),
        ..Default::default()
    })
    .unwrap()
}

fn fixture_patches() -> (ndarray::Array3<f32>, Vec<Grid>) {
    let px = distorch_vision::job::output::read_pixels(&fixture(NAME).join("pixels.safetensors"))
        .unwrap();
    match px {
        Pixels::Patches { values, grids } => (values, grids),
        Pixels::Square(_) => panic!("the naflex fixture holds patches"),
    }
}

const ALL: [&str; 4] = [
    "last_hidden_state",
    "image_embeds",
    "penultimate_hidden_states",
    "all_hidden_states",
];

#[test]
fn library_encode_matches_hugging_face_in_mixed_and_single_batches() {
    let tmp = temp_dir("naflex_lib");
    let cv = load(&tmp);
    let (values, grids) = fixture_patches();
    // 1:1, 1:4, 4:1, 2:3, 7:5, 3:3 and one-column grids.
    assert_eq!(grids.len(), 7);
    for g in [Grid::new(4, 16), Grid::new(16, 4), Grid::new(12, 1)] {
        assert!(grids.contains(&g), "{g}");
    }
    let expected = read_tensors(&fixture(NAME).join("expected.safetensors"));
    let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    for batch in [7, 4, 1] {
        let px = PixelsView::Patches {
            values: values.view(),
            grids: &grids,
        };
        let res = cv.encode(px, &all, batch).unwrap();
        assert_eq!(res.grids.as_deref(), Some(&grids[..]));
        for (name, shape, want) in &expected {
            let got = res.get(name).unwrap();
            assert_eq!(got.shape(), &shape[..], "{name}");
            let got: Vec<f32> = got.iter().copied().collect();
            let d = max_abs_diff(&got, want);
            eprintln!("naflex batch {batch} {name}: max |diff| {d:.2e}");
            assert!(d <= TOL, "batch {batch} {name}: {d}");
        }
    }
}

#[test]
fn a_mixed_batch_equals_each_image_alone_whatever_the_padding_holds() {
    let tmp = temp_dir("naflex_alone");
    let cv = load(&tmp);
    let (values, grids) = fixture_patches();
    let all: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    // The padded rows hold garbage: it must not reach any valid token.
    let mut noisy = values.clone();
    for (i, g) in grids.iter().enumerate() {
        for (k, v) in noisy
            .slice_mut(ndarray::s![i, g.patches().., ..])
            .iter_mut()
            .enumerate()
        {
            *v = 50.0 * ((k % 7) as f32 - 3.0);
        }
    }
    let mixed = cv
        .encode(
            PixelsView::Patches {
                values: noisy.view(),
                grids: &grids,
            },
            &all,
            7,
        )
        .unwrap();
    for (i, g) in grids.iter().enumerate() {
        // Alone: only its own patch rows, no padding at all.
        let own = values.slice(ndarray::s![i..i + 1, ..g.patches(), ..]);
        let alone = cv
            .encode(
                PixelsView::Patches {
                    values: own,
                    grids: std::slice::from_ref(g),
                },
                &all,
                1,
            )
            .unwrap();
        for name in ALL {
            let a = mixed.get(name).unwrap();
            let b = alone.get(name).unwrap();
            assert_eq!(&a.shape()[1..], &b.shape()[1..], "{name}");
            let a: Vec<f32> = a.index_axis(ndarray::Axis(0), i).iter().copied().collect();
            let b: Vec<f32> = b.iter().copied().collect();
            let d = max_abs_diff(&a, &b);
            assert!(d <= 1e-5, "image {i} ({g}) {name}: {d}");
        }
    }
}

#[test]
fn comfyui_siglip2_preprocess_is_reproduced_bit_for_bit() {
    use distorch_vision::image::{self, Patching, PreprocessSpec, SIGLIP_MEAN, SIGLIP_STD};
    let refs = read_any_tensors(&fixture(NAME).join("comfy_pixels.safetensors"));
    let mut checked = 0;
    for (key, shape, q8) in refs.iter().filter(|t| t.0.ends_with("__q8")) {
        let (file, rest) = key.split_once("__").unwrap();
        let (p, n) = rest
            .trim_end_matches("__q8")
            .trim_start_matches('p')
            .split_once("_n")
            .unwrap();
        let patching = Patching {
            patch_size: p.parse().unwrap(),
            num_patches: n.parse().unwrap(),
        };
        let grid = &refs
            .iter()
            .find(|t| t.0 == key.replace("__q8", "__grid"))
            .unwrap()
            .2;
        let spec = PreprocessSpec {
            size: 0,
            mean: SIGLIP_MEAN,
            std: SIGLIP_STD,
            crop: Default::default(),
            patching: Some(patching),
        };
        let img = image::decode_file(&root().join("tests/fixtures/images").join(file)).unwrap();
        let got = image::prepare(&img, &spec).unwrap();
        let g = got.grid.unwrap();
        assert_eq!([g.rows as f64, g.cols as f64], [grid[0], grid[1]], "{key}");
        assert_eq!(shape, &vec![g.patches(), patching.patch_len()], "{key}");
        let rows = g.patches() * patching.patch_len();
        for (k, (&v, &q)) in got.values[..rows].iter().zip(q8).enumerate() {
            let want = ((q as f32) / 255.0 - 0.5) / 0.5;
            assert_eq!(v, want, "{key} value {k}");
        }
        assert!(
            got.values[rows..].iter().all(|&v| v == 0.0),
            "{key} padding"
        );
        checked += 1;
    }
    assert_eq!(checked, 9);
}

/// The image files of the image-level fixture, in its order.
fn image_files() -> Vec<std::path::PathBuf> {
    let st = distorch_vision::model::SafeTensors::open(
        &fixture(NAME).join("images_expected.safetensors"),
    )
    .unwrap();
    let names: Vec<String> = serde_json::from_str(&st.metadata()["inputs"]).unwrap();
    names
        .iter()
        .map(|f| root().join("tests/fixtures/images").join(f))
        .collect()
}

fn model_file() -> std::path::PathBuf {
    fixture(NAME).join("model.safetensors")
}

/// `encode` through the CLI with `args`, into `out`.
fn cli_encode(graphs: &std::path::Path, out: &std::path::Path, args: &[&std::ffi::OsStr]) {
    let o = run(bin()
        .args(["encode", "--device", "cpu", "--model"])
        .arg(model_file())
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--graphs-dir")
        .arg(graphs));
    assert!(o.status.success(), "{}", stderr(&o));
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// A named tensor of `read_any_tensors`.
fn tensor<'a>(
    t: &'a [(String, Vec<usize>, Vec<f64>)],
    name: &str,
) -> &'a (String, Vec<usize>, Vec<f64>) {
    t.iter()
        .find(|x| x.0 == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn images_match_hugging_face_processor_and_model() {
    // Each image file through the CLI (decoding, our preprocessing = ComfyUI's, the graphs),
    // against HF's own processor and model: the same grids, and cosine ≥ 0.999 per image.
    let tmp = temp_dir("naflex_images");
    let files = image_files();
    let out = tmp.join("out.safetensors");
    let mut args: Vec<&std::ffi::OsStr> = vec![os("--images")];
    args.extend(files.iter().map(|f| f.as_os_str()));
    args.extend([os("--batch-size"), os("4")]);
    cli_encode(&tmp.join("graphs"), &out, &args);
    let got = read_any_tensors(&out);
    let want = read_any_tensors(&fixture(NAME).join("images_expected.safetensors"));
    let shapes = &tensor(&got, "spatial_shapes").2;
    assert_eq!(shapes, &tensor(&want, "spatial_shapes").2);
    let (_, shape, last) = tensor(&got, "last_hidden_state");
    let (t, d) = (shape[1], shape[2]);
    assert_eq!(t, 64);
    let embeds = &tensor(&got, "image_embeds").2;
    for (i, f) in files.iter().enumerate() {
        let n = (shapes[2 * i] * shapes[2 * i + 1]) as usize * d;
        let rows = i * t * d..i * t * d + n;
        let c = cosine(
            &last[rows.clone()],
            &tensor(&want, "last_hidden_state").2[rows],
        );
        let e = i * d..(i + 1) * d;
        let ce = cosine(&embeds[e.clone()], &tensor(&want, "image_embeds").2[e]);
        let name = f.file_name().unwrap().to_string_lossy();
        eprintln!(
            "{name} ({}x{}): last_hidden_state cosine {c:.6}, image_embeds cosine {ce:.6}",
            shapes[2 * i],
            shapes[2 * i + 1]
        );
        assert!(c >= 0.999 && ce >= 0.999, "{name}: {c} {ce}");
        // The padding rows are zero.
        assert!(
            last[i * t * d + n..(i + 1) * t * d]
                .iter()
                .all(|&v| v == 0.0),
            "{name}"
        );
    }
}

#[test]
fn preprocess_then_encode_pixels_npy_shards_and_yaml_agree_with_images() {
    let tmp = temp_dir("naflex_front_ends");
    let graphs = tmp.join("graphs");
    let files = image_files();
    let mut images: Vec<&std::ffi::OsStr> = vec![os("--images")];
    images.extend(files.iter().map(|f| f.as_os_str()));
    let direct = tmp.join("direct.safetensors");
    cli_encode(&graphs, &direct, &images);
    let direct = read_any_tensors(&direct);
    // preprocess writes patches with their grids (HF's layout); encode --pixels reads them.
    let px = tmp.join("px.safetensors");
    let o = run(bin()
        .args(["preprocess", "--model"])
        .arg(model_file())
        .args(&images)
        .arg("--out")
        .arg(&px));
    assert!(o.status.success(), "{}", stderr(&o));
    let p = read_any_tensors(&px);
    assert_eq!(tensor(&p, "pixel_values").1, vec![files.len(), 64, 48]);
    assert_eq!(
        tensor(&p, "spatial_shapes").2,
        tensor(&direct, "spatial_shapes").2
    );
    let via_pixels = tmp.join("via_pixels.safetensors");
    cli_encode(&graphs, &via_pixels, &[os("--pixels"), px.as_os_str()]);
    assert_eq!(read_any_tensors(&via_pixels), direct);
    // npy: one file per output, and the grids as int64.
    let npy = tmp.join("npy");
    let mut args = images.clone();
    args.extend([os("--format"), os("npy")]);
    cli_encode(&graphs, &npy, &args);
    let grids = std::fs::read(npy.join("spatial_shapes.npy")).unwrap();
    assert!(String::from_utf8_lossy(&grids[..64]).contains("'<i8'"));
    let values: Vec<f64> = grids[grids.len() - 16 * files.len()..]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
        .collect();
    assert_eq!(&values, &tensor(&direct, "spatial_shapes").2);
    // Shards of 3 (a batch of 2): every shard holds its rows' grids.
    let shards = tmp.join("shards");
    let mut args = images.clone();
    args.extend([os("--shard-size"), os("3"), os("--batch-size"), os("2")]);
    cli_encode(&graphs, &shards, &args);
    let mut joined: Vec<Vec<f64>> = vec![Vec::new(); 2];
    for k in 0..3 {
        let s = read_any_tensors(&shards.join(distorch_vision::job::batch::shard_name(k)));
        joined[0].extend(&tensor(&s, "spatial_shapes").2);
        joined[1].extend(&tensor(&s, "image_embeds").2);
    }
    assert_eq!(joined[0], tensor(&direct, "spatial_shapes").2);
    let d = joined[1]
        .iter()
        .zip(&tensor(&direct, "image_embeds").2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(d <= 1e-5, "sharded image_embeds differ by {d}");
    // A YAML run of the same job writes what the CLI wrote.
    let yaml = tmp.join("job.yaml");
    let list: Vec<String> = files
        .iter()
        .map(|f| format!("    - {}", f.display()))
        .collect();
    std::fs::write(
        &yaml,
        format!(
            "clip_vision: {}\ndevice: cpu\ngraphs_dir: {}\ninputs:\n  images:\n{}\nout: {}\n",
            model_file().display(),
            graphs.display(),
            list.join("\n"),
            tmp.join("yaml.safetensors").display()
        ),
    )
    .unwrap();
    let o = run(bin().arg("run").arg(&yaml));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_any_tensors(&tmp.join("yaml.safetensors")), direct);
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// A SigLIP2 naflex tower's tensors (HF layout) for a header-only file.
fn naflex_tensors(
    d: usize,
    layers: usize,
    mlp: usize,
    patch: usize,
    n: usize,
    head: bool,
) -> Tensors {
    let mut t: Tensors = vec![
        (
            "vision_model.embeddings.patch_embedding.weight".into(),
            vec![d, 3 * patch * patch],
        ),
        (
            "vision_model.embeddings.patch_embedding.bias".into(),
            vec![d],
        ),
        (
            "vision_model.embeddings.position_embedding.weight".into(),
            vec![n, d],
        ),
        ("vision_model.post_layernorm.weight".into(), vec![d]),
        ("vision_model.post_layernorm.bias".into(), vec![d]),
    ];
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
        for (name, shape) in [
            ("attention.out_proj", vec![d, d]),
            ("mlp.fc1", vec![mlp, d]),
            ("mlp.fc2", vec![d, mlp]),
        ] {
            let rows = shape[0];
            t.push((format!("vision_model.head.{name}.weight"), shape));
            t.push((format!("vision_model.head.{name}.bias"), vec![rows]));
        }
        t.push(("vision_model.head.layernorm.weight".into(), vec![d]));
        t.push(("vision_model.head.layernorm.bias".into(), vec![d]));
    }
    for l in 0..layers {
        let p = format!("vision_model.encoder.layers.{l}.");
        for n in ["layer_norm1", "layer_norm2"] {
            t.push((format!("{p}{n}.weight"), vec![d]));
            t.push((format!("{p}{n}.bias"), vec![d]));
        }
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            t.push((format!("{p}self_attn.{n}.weight"), vec![d, d]));
            t.push((format!("{p}self_attn.{n}.bias"), vec![d]));
        }
        t.push((format!("{p}mlp.fc1.weight"), vec![mlp, d]));
        t.push((format!("{p}mlp.fc1.bias"), vec![mlp]));
        t.push((format!("{p}mlp.fc2.weight"), vec![d, mlp]));
        t.push((format!("{p}mlp.fc2.bias"), vec![d]));
    }
    t
}

#[test]
fn a_siglip2_vision_config_sidecar_sizes_other_towers_and_bad_ones_are_named() {
    // google/siglip2-base-patch16-naflex's shape: 768 wide, 12 layers (no key-table row).
    let tmp = temp_dir("naflex_sidecar");
    let file = tmp.join("base.safetensors");
    write_sparse_safetensors(&file, &naflex_tensors(768, 12, 3072, 16, 256, true));
    let inspect = || run(bin().args(["inspect", "--json", "--model"]).arg(&file));
    let o = inspect();
    assert!(!o.status.success(), "no row matches a 768-wide naflex file");
    let sidecar = tmp.join("base.json");
    let write = |json: serde_json::Value| std::fs::write(&sidecar, json.to_string()).unwrap();
    write(
        serde_json::json!({"model_type": "siglip2_vision_model", "hidden_size": 768,
        "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
        "patch_size": 16, "num_patches": 256}),
    );
    let o = inspect();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["family"], "SigLIP2 naflex (base.json)");
    let c = &v["config"];
    assert_eq!(
        (&c["kind"], &c["num_patches"], &c["tokens"]),
        (&"siglip2".into(), &256.into(), &256.into())
    );
    assert_eq!(c["attention_pool"], true);
    // The whole config of a SigLIP2 model (text and vision) works too.
    write(
        serde_json::json!({"model_type": "siglip2", "vision_config": {"hidden_size": 768,
        "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}}),
    );
    assert!(inspect().status.success());
    // Bad values are named.
    for (json, needle) in [
        (
            serde_json::json!({"model_type": "siglip2_vision_model", "hidden_size": 768,
            "intermediate_size": 3072, "num_attention_heads": 12, "num_patches": 250}),
            "num_patches = 250",
        ),
        (
            serde_json::json!({"model_type": "siglip2_vision_model", "num_channels": 1}),
            "num_channels",
        ),
        (
            serde_json::json!({"model_type": "siglip2_vision_model", "hidden_size": 768,
            "intermediate_size": 3072, "num_attention_heads": 12, "num_patches": 256,
            "patch_size": 14}),
            "patch_embedding.weight",
        ),
    ] {
        write(json);
        let o = inspect();
        assert!(!o.status.success());
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
    // vision_use_head true on a file without the head is an error; false loads the tower
    // without image_embeds.
    write_sparse_safetensors(&file, &naflex_tensors(768, 12, 3072, 16, 256, false));
    let base = serde_json::json!({"model_type": "siglip2_vision_model", "hidden_size": 768,
        "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12});
    let mut with = base.clone();
    with["vision_use_head"] = true.into();
    write(with);
    let o = inspect();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("vision_use_head"), "{}", stderr(&o));
    write(base);
    let o = inspect();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["outputs"],
        serde_json::json!(["last_hidden_state", "penultimate_hidden_states"])
    );
}

/// A tensor as stored: dtype, shape, bytes.
type Raw = (distorch_vision::model::DType, Vec<usize>, Vec<u8>);

#[test]
fn bad_naflex_inputs_are_refused_with_the_layout_expected() {
    let tmp = temp_dir("naflex_bad");
    let naflex_px = fixture(NAME).join("pixels.safetensors");
    let encode = |model: &std::path::Path, px: &std::path::Path| {
        run(bin()
            .args(["encode", "--device", "cpu", "--model"])
            .arg(model)
            .arg("--pixels")
            .arg(px)
            .arg("--out")
            .arg(tmp.join("out.safetensors"))
            .arg("--graphs-dir")
            .arg(tmp.join("graphs")))
    };
    // Square pixels to a naflex model, and naflex patches to a square model.
    let o = encode(
        &model_file(),
        &fixture("siglip_f32").join("pixels.safetensors"),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("spatial_shapes"), "{}", stderr(&o));
    let o = encode(&fixture("siglip_f32").join("model.safetensors"), &naflex_px);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("square pixels"), "{}", stderr(&o));
    // A pixel file whose mask disagrees with its grids, or whose grids miss an image.
    let st = distorch_vision::model::SafeTensors::open(&naflex_px).unwrap();
    let get = |name: &str| {
        let info = &st.tensors()[name];
        (
            info.dtype,
            info.shape.clone(),
            st.data(info).unwrap().to_vec(),
        )
    };
    let write = |path: &std::path::Path, tensors: Vec<(&str, Raw)>| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, (dt, shape, bytes))| {
                let dt = match dt {
                    distorch_vision::model::DType::F32 => safetensors::Dtype::F32,
                    distorch_vision::model::DType::I64 => safetensors::Dtype::I64,
                    _ => safetensors::Dtype::I32,
                };
                (
                    n.to_string(),
                    safetensors::tensor::TensorView::new(dt, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    };
    let mut mask = get("pixel_attention_mask");
    mask.2[0] ^= 1;
    let bad = tmp.join("bad_mask.safetensors");
    write(
        &bad,
        vec![
            ("pixel_values", get("pixel_values")),
            ("spatial_shapes", get("spatial_shapes")),
            ("pixel_attention_mask", mask),
        ],
    );
    let o = encode(&model_file(), &bad);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("pixel_attention_mask"),
        "{}",
        stderr(&o)
    );
    let mut shapes = get("spatial_shapes");
    shapes.1 = vec![3, 2];
    shapes.2.truncate(3 * 2 * 8);
    let bad = tmp.join("bad_shapes.safetensors");
    write(
        &bad,
        vec![
            ("pixel_values", get("pixel_values")),
            ("spatial_shapes", shapes),
        ],
    );
    let o = encode(&model_file(), &bad);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("[7, 2]"), "{}", stderr(&o));
}

#[test]
fn the_whole_model_graph_makes_its_own_key_mask() {
    // `export --granularity whole`: one graph from patches and grids to the outputs, its key
    // mask built in the graph (bench's split ratio runs it).
    use ort::session::Session;
    let tmp = temp_dir("naflex_whole");
    let o = run(bin()
        .args(["export", "--granularity", "whole", "--model"])
        .arg(model_file())
        .arg("--out")
        .arg(&tmp));
    assert!(o.status.success(), "{}", stderr(&o));
    let (values, grids) = fixture_patches();
    let shapes = ndarray::Array2::from_shape_fn((grids.len(), 2), |(i, k)| {
        (if k == 0 { grids[i].rows } else { grids[i].cols }) as i64
    });
    let env = distorch_vision::runtime::environment().unwrap();
    let session = Session::builder(&env).unwrap();
    // ONNX Runtime's CPU provider named: with the OpenVINO plugin registered in this process
    // (other tests), a session naming none would be placed on OpenVINO, in bf16.
    let mut session = distorch_vision::runtime::engine::mlas(session)
        .unwrap()
        .commit_from_file(tmp.join("whole.onnx"))
        .unwrap();
    let out = session
        .run(ort::inputs![
            "pixel_values" => ort::value::TensorRef::from_array_view(values.view()).unwrap(),
            "spatial_shapes" => ort::value::Tensor::from_array(shapes).unwrap()
        ])
        .unwrap();
    let expected = read_tensors(&fixture(NAME).join("expected.safetensors"));
    for (name, _, want) in expected.iter().filter(|t| t.0 != "all_hidden_states") {
        let got = out[name.as_str()]
            .try_extract_array::<f32>()
            .unwrap()
            .to_owned();
        // Padding rows are whatever the graph makes of them; the runner zeroes them.
        let got = distorch_vision::runtime::pass_input::pad_tokens(got, &grids, 64);
        let got: Vec<f32> = got.iter().copied().collect();
        let d = max_abs_diff(&got, want);
        assert!(d <= TOL, "{name}: {d}");
    }
}
