//! Preprocessing and batch encoding through the CLI: `preprocess`, `encode --images`, sharded
//! encoding with a run killed midway and resumed, unreadable images (skipped / `--strict`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use distorch_vision::image::Crop;
use distorch_vision::job::batch::{preprocess_file, ShardIndex};
use distorch_vision::model::{Model, SafeTensors};

fn clip() -> PathBuf {
    fixture("clip_quickgelu_f32").join("model.safetensors")
}

fn images_dir() -> PathBuf {
    root().join("tests/fixtures/images")
}

/// Metadata `inputs` of a safetensors file.
fn sources(path: &Path) -> Vec<String> {
    let st = SafeTensors::open(path).unwrap();
    serde_json::from_str(&st.metadata()["inputs"]).unwrap()
}

fn tensor<'a>(
    t: &'a [(String, Vec<usize>, Vec<f32>)],
    name: &str,
) -> &'a (String, Vec<usize>, Vec<f32>) {
    t.iter().find(|x| x.0 == name).unwrap()
}

/// `n` small generated PNGs (48×40, distinct content) in `dir`.
fn make_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let img = ::image::RgbImage::from_fn(48, 40, |x, y| {
                ::image::Rgb([
                    ((x * 5 + i as u32 * 7) % 256) as u8,
                    ((y * 3 + i as u32 * 13) % 256) as u8,
                    ((x * y + i as u32) % 256) as u8,
                ])
            });
            let p = dir.join(format!("img_{i:04}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect()
}

#[test]
fn preprocess_cli_equals_library_per_file_in_order() {
    let tmp = temp_dir("preprocess_cli");
    let files = [
        images_dir().join("portrait_45x77.png"),
        images_dir().join("plain_64x48.jpg"),
        images_dir().join("rgba_33x50.png"),
    ];
    for (crop, model) in [
        (Crop::Center, clip()),
        (Crop::None, fixture("siglip_f32").join("model.safetensors")),
    ] {
        let out = tmp.join(format!("px_{crop}.safetensors"));
        let o = run(bin()
            .args(["preprocess", "--model"])
            .arg(&model)
            .arg("--images")
            .args(&files)
            .args(["--crop", crop.as_str(), "--out"])
            .arg(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        let t = read_tensors(&out);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "pixel_values");
        assert_eq!(t[0].1, vec![3, 3, 32, 32]);
        let spec = Model::open(&model).unwrap().config.preprocess_spec(crop);
        for (i, f) in files.iter().enumerate() {
            let want = preprocess_file(f, &spec).unwrap();
            assert_eq!(
                &t[0].2[i * 3072..(i + 1) * 3072],
                &want.values[..],
                "{}",
                f.display()
            );
        }
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(sources(&out), names);
        // The pixels file is what `encode --pixels` takes.
        distorch_vision::job::output::read_pixels(&out).unwrap();
    }
}

#[test]
fn folders_expand_recursively_sorted_after_files_in_given_order() {
    let tmp = temp_dir("preprocess_folders");
    let d = tmp.join("imgs");
    std::fs::create_dir_all(d.join("b/deeper")).unwrap();
    std::fs::create_dir_all(d.join("a")).unwrap();
    for (src, dst) in [
        ("up_20x13.png", "z.png"),
        ("grey_40x30.png", "b/deeper/x.PNG"),
        ("plain_64x48.jpg", "a/m.jpg"),
        ("exact_32x32.png", "b/c.png"),
    ] {
        std::fs::copy(images_dir().join(src), d.join(dst)).unwrap();
    }
    std::fs::write(d.join("notes.txt"), "not an image").unwrap();
    let single = images_dir().join("la_22x15.png");
    let out = tmp.join("px.safetensors");
    let o = run(bin()
        .args(["preprocess", "--model"])
        .arg(clip())
        .arg("--images")
        .arg(&single)
        .arg(&d)
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let want: Vec<String> = [
        single,
        d.join("a/m.jpg"),
        d.join("b/c.png"),
        d.join("b/deeper/x.PNG"),
        d.join("z.png"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect();
    assert_eq!(sources(&out), want);
    assert_eq!(read_tensors(&out)[0].1[0], 5);
}

#[test]
fn encode_images_equals_encode_of_preprocessed_pixels() {
    let tmp = temp_dir("encode_images");
    let files = [
        images_dir().join("landscape_131x33.png"),
        images_dir().join("exif6_40x24.jpg"),
    ];
    let px = tmp.join("px.safetensors");
    let o = run(bin()
        .args(["preprocess", "--model"])
        .arg(clip())
        .arg("--images")
        .args(&files)
        .arg("--out")
        .arg(&px));
    assert!(o.status.success(), "{}", stderr(&o));
    let graphs = tmp.join("graphs");
    let encode = |input: &str, paths: &[PathBuf], out: &Path| {
        run(bin()
            .args(["encode", "--model"])
            .arg(clip())
            .arg(input)
            .args(paths)
            .arg("--out")
            .arg(out)
            .args(["--device", "cpu", "--graphs-dir"])
            .arg(&graphs))
    };
    let a = tmp.join("a.safetensors");
    let b = tmp.join("b.safetensors");
    let o = encode("--images", &files, &a);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = encode("--pixels", std::slice::from_ref(&px), &b);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_tensors(&a), read_tensors(&b));
    assert_eq!(
        sources(&a),
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
    );
    // Exactly one of --images and --pixels.
    let o = run(bin()
        .args(["encode", "--model"])
        .arg(clip())
        .arg("--out")
        .arg(tmp.join("c.safetensors")));
    assert!(!o.status.success());
    let o = run(bin()
        .args(["encode", "--model"])
        .arg(clip())
        .arg("--images")
        .arg(&files[0])
        .arg("--pixels")
        .arg(&px)
        .arg("--out")
        .arg(tmp.join("c.safetensors")));
    assert!(!o.status.success());
}

fn sharded_cmd(images: &Path, out: &Path, graphs: &Path) -> std::process::Command {
    let mut c = bin();
    c.args(["encode", "--model"])
        .arg(clip())
        .arg("--images")
        .arg(images)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--graphs-dir"])
        .arg(graphs);
    c
}

/// Warms the graph export on `warm_image` (so the timed run starts encoding at once), then starts
/// a sharded run of `tmp/imgs` into `out`: shards of 20, batches of 4, at least 40 ms apart.
fn start_throttled_run(
    warm_image: &Path,
    tmp: &Path,
    out: &Path,
    graphs: &Path,
    stderr_to: Stdio,
) -> std::process::Child {
    let o = run(sharded_cmd(warm_image, &tmp.join("warm"), graphs).args(["--shard-size", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    sharded_cmd(&tmp.join("imgs"), out, graphs)
        .args([
            "--shard-size",
            "20",
            "--batch-size",
            "4",
            "--throttle-ms",
            "40",
        ])
        .stderr(stderr_to)
        .spawn()
        .unwrap()
}

/// Every shard of `out`: rows match the index, metadata sources match the index.
fn check_shards(out: &Path) -> (ShardIndex, Vec<String>) {
    let index = ShardIndex::read(out).unwrap().expect("index.json");
    let mut all = Vec::new();
    for (n, s) in index.shards.iter().enumerate() {
        assert_eq!(s.file, format!("shard-{n:05}.safetensors"));
        let p = out.join(&s.file);
        assert_eq!(sources(&p), s.sources, "{}", s.file);
        let t = read_tensors(&p);
        for (name, shape, _) in &t {
            assert_eq!(shape[0], s.rows, "{}: {name}", s.file);
        }
        assert_eq!(s.sources.len(), s.rows);
        all.extend(s.sources.clone());
    }
    assert_eq!(index.rows, all.len());
    (index, all)
}

#[test]
fn sharded_run_killed_midway_resumes_without_duplicates_or_gaps() {
    let tmp = temp_dir("shard_resume");
    let files = make_images(&tmp.join("imgs"), 200);
    let out = tmp.join("out");
    let graphs = tmp.join("graphs");
    let mut child = start_throttled_run(&files[0], &tmp, &out, &graphs, Stdio::null());
    let t = Instant::now();
    while !out.join("shard-00001.safetensors").exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "no shard appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (index, done) = check_shards(&out);
    assert!(!index.complete);
    assert!(done.len() < 200, "the run finished before the kill");
    assert_eq!(done.len() % 20, 0);

    // Without --resume the folder is refused.
    let o = run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args(["--shard-size", "20"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));

    let o = run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args([
        "--shard-size",
        "20",
        "--batch-size",
        "4",
        "--resume",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (index, all) = check_shards(&out);
    assert!(index.complete);
    let want: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(all, want, "every image once, in order");
    assert_eq!(index.shards.len(), 10);

    // Rows are the same embeddings a one-shot encode gives.
    let one = tmp.join("one.safetensors");
    let o = run(bin()
        .args(["encode", "--model"])
        .arg(clip())
        .arg("--images")
        .args(&files[..3])
        .arg("--out")
        .arg(&one)
        .args(["--device", "cpu", "--graphs-dir"])
        .arg(&graphs));
    assert!(o.status.success(), "{}", stderr(&o));
    let a = read_tensors(&one);
    let b = read_tensors(&out.join("shard-00000.safetensors"));
    let (ea, eb) = (tensor(&a, "image_embeds"), tensor(&b, "image_embeds"));
    let w = ea.1[1];
    assert!(max_abs_diff(&ea.2, &eb.2[..3 * w]) < 1e-5);

    // Resuming a finished run does nothing.
    let o =
        run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args(["--shard-size", "20", "--resume"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(check_shards(&out).1, want);
}

#[test]
fn unreadable_images_are_skipped_and_reported_or_abort_with_strict() {
    let tmp = temp_dir("shard_corrupt");
    let dir = tmp.join("imgs");
    let files = make_images(&dir, 12);
    std::fs::write(dir.join("img_0003b.png"), b"definitely not a png").unwrap();
    let good = std::fs::read(&files[0]).unwrap();
    std::fs::write(dir.join("img_0007b.png"), &good[..good.len() / 2]).unwrap();
    let graphs = tmp.join("graphs");
    let out = tmp.join("out");
    let o = run(sharded_cmd(&dir, &out, &graphs).args(["--shard-size", "5"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("2 skipped"), "{err}");
    assert!(
        err.contains("img_0003b.png") && err.contains("img_0007b.png"),
        "{err}"
    );
    // The skip lines name each file once (the reason does not repeat the path).
    assert_eq!(err.lines().filter(|l| l.starts_with("skipped ")).count(), 2);
    for line in err.lines().filter(|l| l.starts_with("skipped ")) {
        assert_eq!(line.matches("img_000").count(), 1, "{line}");
    }
    let (index, all) = check_shards(&out);
    assert_eq!(all.len(), 12);
    assert_eq!(
        index.shards.iter().map(|s| s.rows).collect::<Vec<_>>(),
        [5, 5, 2]
    );
    let skipped: Vec<&str> = index.skipped.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(skipped.len(), 2);
    assert!(skipped[0].ends_with("img_0003b.png") && skipped[1].ends_with("img_0007b.png"));
    assert!(index.skipped.iter().all(|s| !s.reason.is_empty()));

    let o = run(sharded_cmd(&dir, &tmp.join("strict"), &graphs).args([
        "--shard-size",
        "5",
        "--strict",
    ]));
    assert!(!o.status.success());
    let err = stderr(&o);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("img_0003b.png"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // One-shot (not sharded) encoding skips and lists them the same way...
    let one = tmp.join("one.safetensors");
    let o = run(bin()
        .args(["encode", "--model"])
        .arg(clip())
        .arg("--images")
        .arg(&dir)
        .arg("--out")
        .arg(&one)
        .args(["--device", "cpu", "--graphs-dir"])
        .arg(&graphs));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("2 skipped"), "{err}");
    let skip_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("skipped ")).collect();
    assert_eq!(skip_lines.len(), 2, "{err}");
    assert!(skip_lines[0].contains("img_0003b.png") && skip_lines[1].contains("img_0007b.png"));
    let want: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(sources(&one), want);
    assert_eq!(read_tensors(&one)[0].1[0], 12);
    // ...and --strict aborts there, naming the file.
    let o = run(bin()
        .args(["encode", "--strict", "--model"])
        .arg(clip())
        .arg("--images")
        .arg(&dir)
        .arg("--out")
        .arg(tmp.join("strict.safetensors"))
        .args(["--device", "cpu", "--graphs-dir"])
        .arg(&graphs));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("img_0003b.png"), "{}", stderr(&o));
    assert!(!tmp.join("strict.safetensors").exists());
}

/// The index after a sharded run, read back.
fn index_of(out: &Path) -> ShardIndex {
    ShardIndex::read(out).unwrap().expect("index.json")
}

#[test]
fn resume_refuses_another_model_crop_or_outputs_naming_the_difference() {
    let tmp = temp_dir("resume_identity");
    let imgs = tmp.join("imgs");
    make_images(&imgs, 6);
    let graphs = tmp.join("graphs");
    let out = tmp.join("out");
    let o = run(sharded_cmd(&imgs, &out, &graphs).args(["--shard-size", "4"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(out.join("index.json")).unwrap();
    let id = index_of(&out)
        .identity
        .expect("the index records the run's identity");
    assert_eq!(id.crop, "center");
    assert_eq!(id.model_id.len(), 32);

    // Another model with the same sizes and outputs (different weights, GELU).
    let other = fixture("clip_gelu_f16").join("model.safetensors");
    let refused = |extra: &[&str], model: &Path, needles: &[&str]| {
        let o = run(bin()
            .args(["encode", "--model"])
            .arg(model)
            .arg("--images")
            .arg(&imgs)
            .arg("--out")
            .arg(&out)
            .args(["--device", "cpu", "--graphs-dir"])
            .arg(&graphs)
            .args(["--shard-size", "4", "--resume"])
            .args(extra));
        assert!(!o.status.success(), "{extra:?} was accepted");
        let err = stderr(&o);
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err}");
        }
        assert_eq!(std::fs::read(out.join("index.json")).unwrap(), before);
    };
    refused(&[], &other, &["cannot resume", "model:", "clip_gelu_f16"]);
    refused(
        &["--crop", "none"],
        &clip(),
        &["crop: center before, none now"],
    );
    refused(
        &["--outputs", "image_embeds"],
        &clip(),
        &["outputs:", "image_embeds"],
    );
    // Model and crop at once: both named.
    refused(&["--crop", "none"], &other, &["model:", "crop:"]);
    // The same settings resume: nothing left to do, said plainly.
    let o = run(sharded_cmd(&imgs, &out, &graphs).args(["--shard-size", "4", "--resume"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing to encode: all 6 images are already in 2 shards"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn resume_recognises_the_same_images_spelled_differently() {
    let tmp = temp_dir("resume_spelling");
    let files = make_images(&tmp.join("imgs"), 12);
    let graphs = tmp.join("graphs");
    std::fs::create_dir_all(tmp.join("elsewhere/deeper")).unwrap();
    // The first run: five files, spelled relative to tmp/elsewhere.
    let first: Vec<String> = (0..5).map(|i| format!("../imgs/img_{i:04}.png")).collect();
    let o = run(bin()
        .current_dir(tmp.join("elsewhere"))
        .args(["encode", "--model"])
        .arg(clip())
        .arg("--images")
        .args(&first)
        .args(["--out", "../out", "--shard-size", "4", "--device", "cpu"])
        .arg("--graphs-dir")
        .arg(&graphs));
    assert!(o.status.success(), "{}", stderr(&o));
    // The resume: the whole folder, absolute, from another folder, plus one file again.
    let o = run(bin()
        .current_dir(tmp.join("elsewhere/deeper"))
        .args(["encode", "--model"])
        .arg(clip())
        .arg("--images")
        .arg(tmp.join("imgs"))
        .arg("../../imgs/./img_0003.png")
        .arg("--out")
        .arg(tmp.join("out"))
        .args(["--shard-size", "4", "--device", "cpu", "--resume"])
        .arg("--graphs-dir")
        .arg(&graphs));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("encoded 7 images"), "{err}");
    assert!(err.contains("5 were already there"), "{err}");
    let (index, all) = check_shards(&tmp.join("out"));
    assert!(index.complete);
    assert_eq!(all.len(), 12, "{all:?}");
    // Each image once, spelled as given by the run that encoded it.
    let mut want: Vec<String> = first.clone();
    want.extend(files[5..].iter().map(|f| f.display().to_string()));
    assert_eq!(all, want);
    let keys: Vec<String> = index.shards.iter().flat_map(|s| s.keys.clone()).collect();
    let canonical: Vec<String> = files
        .iter()
        .map(|f| std::fs::canonicalize(f).unwrap().display().to_string())
        .collect();
    assert_eq!(keys, canonical);
}

#[test]
fn ctrl_c_keeps_finished_rows_and_resume_completes_without_duplicates() {
    let tmp = temp_dir("shard_sigint");
    let files = make_images(&tmp.join("imgs"), 200);
    let out = tmp.join("out");
    let graphs = tmp.join("graphs");
    // 50 batches of 4, 40 ms apart at least: the run lasts seconds; the signal comes once the
    // first shard exists and the second is under way.
    let child = start_throttled_run(&files[0], &tmp, &out, &graphs, Stdio::piped());
    let t = Instant::now();
    while !out.join("shard-00000.safetensors").exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "no shard appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("stopped at "))
        .unwrap_or_else(|| panic!("no stop line in {err}"));
    let n: usize = line["stopped at ".len()..line.find('/').unwrap()]
        .parse()
        .unwrap();
    assert!(line.contains("/200; rerun with --resume"), "{line}");
    let (index, done) = check_shards(&out);
    assert!(!index.complete);
    assert_eq!(done.len(), n, "the finished rows are all kept");
    assert!((20..200).contains(&n), "{n}");

    let o = run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args([
        "--shard-size",
        "20",
        "--batch-size",
        "4",
        "--resume",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("encoded {} image", 200 - n)),
        "{}",
        stderr(&o)
    );
    let (index, all) = check_shards(&out);
    assert!(index.complete);
    let want: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(all, want, "every image once, in order");
}

/// Shape of a `.npy` file, and its f32 values.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

#[test]
fn npy_output_is_real_npy_or_refused_plainly() {
    let tmp = temp_dir("encode_npy");
    let files = [
        images_dir().join("landscape_131x33.png"),
        images_dir().join("exif6_40x24.jpg"),
    ];
    let graphs = tmp.join("graphs");
    let encode = |out: &Path, extra: &[&str]| {
        run(bin()
            .args(["encode", "--model"])
            .arg(clip())
            .arg("--images")
            .args(&files)
            .arg("--out")
            .arg(out)
            .args(["--device", "cpu", "--graphs-dir"])
            .arg(&graphs)
            .args(extra))
    };
    let st = tmp.join("ref.safetensors");
    let o = encode(&st, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = read_tensors(&st);

    // x.npy with every output: one .npy cannot hold them; said before any work.
    let npy = tmp.join("emb.npy");
    let o = encode(&npy, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("one .npy file") && err.contains("image_embeds") && err.contains("--outputs"),
        "{err}"
    );
    assert!(!npy.exists());
    // One output: a real .npy (inferred from the name), sources beside it.
    let o = encode(&npy, &["--outputs", "image_embeds"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (shape, data) = read_npy(&npy);
    let want = tensor(&reference, "image_embeds");
    assert_eq!(shape, want.1);
    assert_eq!(data, want.2);
    let src: Vec<String> =
        serde_json::from_slice(&std::fs::read(tmp.join("emb.sources.json")).unwrap()).unwrap();
    assert_eq!(src.len(), 2);
    // Safetensors bytes under a .npy name are refused.
    let o = encode(&tmp.join("x.npy"), &["--format", "safetensors"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--format npy"), "{}", stderr(&o));
    assert!(!tmp.join("x.npy").exists());
    // So are they under another container's name (it was written as safetensors silently).
    for name in ["x.npz", "x.PT"] {
        let o = encode(&tmp.join(name), &[]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains(name) && err.contains(".safetensors") && err.contains("--format npy"),
            "{err}"
        );
        assert!(!tmp.join(name).exists());
    }
    // --format npy with a folder: one .npy per output.
    let o = encode(&tmp.join("npy_dir"), &["--format", "npy"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, shape, values) in &reference {
        let (s, v) = read_npy(&tmp.join("npy_dir").join(format!("{name}.npy")));
        assert_eq!((&s, &v), (shape, values), "{name}");
    }
    let o = encode(&tmp.join("bad"), &["--format", "parquet"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("safetensors"), "{}", stderr(&o));
}

#[test]
fn pixels_record_their_preprocessing_and_a_mismatch_warns() {
    let tmp = temp_dir("pixels_meta");
    let img = images_dir().join("plain_64x48.jpg");
    let siglip = fixture("siglip_f32").join("model.safetensors");
    let graphs = tmp.join("graphs");
    for (name, model) in [("clip", clip()), ("siglip", siglip)] {
        let o = run(bin()
            .args(["preprocess", "--crop", "none", "--model"])
            .arg(&model)
            .arg("--images")
            .arg(&img)
            .arg("--out")
            .arg(tmp.join(format!("{name}.safetensors"))));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // A .npy name would hide safetensors bytes: refused.
    let o = run(bin()
        .args(["preprocess", "--model"])
        .arg(clip())
        .arg("--images")
        .arg(&img)
        .arg("--out")
        .arg(tmp.join("px.npy")));
    assert!(!o.status.success());
    assert!(stderr(&o).contains(".safetensors"), "{}", stderr(&o));
    let meta = SafeTensors::open(&tmp.join("siglip.safetensors"))
        .unwrap()
        .metadata()
        .clone();
    assert_eq!(meta["image_size"], "32");
    assert_eq!(meta["crop"], "none");
    assert_eq!(meta["mean"], "[0.5,0.5,0.5]");
    assert_eq!(meta["std"], "[0.5,0.5,0.5]");
    let encode = |px: &str| {
        let o = run(bin()
            .args(["encode", "--model"])
            .arg(clip())
            .arg("--pixels")
            .arg(tmp.join(px))
            .arg("--out")
            .arg(tmp.join("out.safetensors"))
            .args(["--device", "cpu", "--graphs-dir"])
            .arg(&graphs));
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let err = encode("clip.safetensors");
    assert!(!err.contains("preprocessed for another model"), "{err}");
    let err = encode("siglip.safetensors");
    assert!(
        err.contains("preprocessed for another model") && err.contains("mean [0.5, 0.5, 0.5]"),
        "{err}"
    );
}

/// A one-file encode command of the quick CLIP fixture.
fn encode_cmd(images: &Path, out: &Path, graphs: &Path) -> std::process::Command {
    let mut c = sharded_cmd(images, out, graphs);
    c.arg("--quiet");
    c
}

#[test]
fn out_never_overwrites_the_model_an_input_or_a_foreign_file() {
    let tmp = temp_dir("out_guard");
    let graphs = tmp.join("graphs");
    let files = make_images(&tmp.join("imgs"), 2);
    // The model with its config beside it (the fixture's sizes need it).
    std::fs::create_dir_all(tmp.join("m")).unwrap();
    for e in std::fs::read_dir(clip().parent().unwrap())
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), tmp.join("m").join(e.file_name())).unwrap();
    }
    let victim = tmp.join("m/model.safetensors");
    let model_bytes = std::fs::read(&victim).unwrap();
    let img_bytes = std::fs::read(&files[0]).unwrap();
    let refused = |o: &std::process::Output, what: &str| {
        assert!(!o.status.success(), "{what}: exit 0");
        assert!(stderr(o).contains(what), "{what}: {}", stderr(o));
    };
    // The model, spelled differently.
    let mut c = bin();
    c.args(["encode", "--model"])
        .arg(&victim)
        .arg("--images")
        .arg(&files[0])
        .arg("--out")
        .arg(tmp.join("imgs/../m/model.safetensors"))
        .args(["--device", "cpu", "--graphs-dir"])
        .arg(&graphs);
    refused(&run(&mut c), "would overwrite the model");
    assert_eq!(std::fs::read(&victim).unwrap(), model_bytes);
    // An input image (as --out, and as the .npy of a one-file npy output).
    refused(
        &run(&mut encode_cmd(&files[0], &files[0], &graphs)),
        "would overwrite the input image",
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), img_bytes);
    // A pixels input.
    let px = tmp.join("m/pixels.safetensors");
    let px_bytes = std::fs::read(&px).unwrap();
    let mut c = bin();
    c.args(["encode", "--model"])
        .arg(&victim)
        .arg("--pixels")
        .arg(&px)
        .arg("--out")
        .arg(&px)
        .args(["--device", "cpu", "--graphs-dir"])
        .arg(&graphs);
    refused(&run(&mut c), "would overwrite the pixels input");
    assert_eq!(std::fs::read(&px).unwrap(), px_bytes);
    // A file this program did not write: another safetensors, a text file.
    let foreign = tmp.join("foreign.safetensors");
    std::fs::copy(clip(), &foreign).unwrap();
    refused(
        &run(&mut encode_cmd(&files[0], &foreign, &graphs)),
        "was not written by distorch-vision",
    );
    let text = tmp.join("notes.txt");
    std::fs::write(&text, "keep me").unwrap();
    refused(
        &run(&mut encode_cmd(&files[0], &text, &graphs)),
        "was not written by distorch-vision",
    );
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "keep me");
    // Our own output is replaced.
    let ours = tmp.join("ours.safetensors");
    for _ in 0..2 {
        let o = run(&mut encode_cmd(&files[0], &ours, &graphs));
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn resume_reencodes_the_rows_of_a_damaged_shard() {
    let tmp = temp_dir("resume_damaged");
    let graphs = tmp.join("graphs");
    make_images(&tmp.join("imgs"), 5);
    let out = tmp.join("out");
    let o = run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args(["--shard-size", "2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, before) = check_shards(&out);
    assert_eq!(before.len(), 5);
    // Cut the middle shard short, as a full disk or a bad copy would.
    let s1 = out.join("shard-00001.safetensors");
    let bytes = std::fs::read(&s1).unwrap();
    std::fs::write(&s1, &bytes[..1000.min(bytes.len() - 1)]).unwrap();
    let o =
        run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args(["--shard-size", "2", "--resume"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("shard-00001"), "{}", stderr(&o));
    let index = index_of(&out);
    let mut all: Vec<String> = Vec::new();
    for s in &index.shards {
        let p = out.join(&s.file);
        assert_eq!(sources(&p), s.sources);
        for (name, shape, _) in read_tensors(&p) {
            assert_eq!(shape[0], s.rows, "{}: {name}", s.file);
        }
        all.extend(s.sources.clone());
    }
    all.sort();
    let mut want = before.clone();
    want.sort();
    assert_eq!(all, want, "every image once after the resume");
    assert_eq!(index.rows, 5);
    assert!(index.complete);
}

#[test]
fn shards_without_an_index_are_never_overwritten() {
    let tmp = temp_dir("shards_no_index");
    let graphs = tmp.join("graphs");
    make_images(&tmp.join("imgs"), 3);
    let out = tmp.join("out");
    let o = run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args(["--shard-size", "2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(out.join("index.json")).unwrap();
    let s0 = std::fs::read(out.join("shard-00000.safetensors")).unwrap();
    for extra in [&["--resume"][..], &[][..]] {
        let o = run(sharded_cmd(&tmp.join("imgs"), &out, &graphs)
            .args(["--shard-size", "2"])
            .args(extra));
        assert!(!o.status.success(), "{extra:?}");
        let e = stderr(&o);
        assert!(
            e.contains("holds shards") && e.contains("no index.json"),
            "{e}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("shard-00000.safetensors")).unwrap(),
        s0
    );
}

#[cfg(unix)]
#[test]
fn file_names_that_are_not_utf8_stay_distinct_and_none_disappears() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = temp_dir("non_utf8_names");
    let graphs = tmp.join("graphs");
    let imgs = tmp.join("imgs");
    let made = make_images(&imgs, 2);
    let names = [b"lat\xe9.png".as_slice(), b"lat\xe8.png".as_slice()];
    for (f, n) in made.iter().zip(names) {
        std::fs::rename(f, imgs.join(std::ffi::OsStr::from_bytes(n))).unwrap();
    }
    let out = tmp.join("out");
    let o = run(sharded_cmd(&imgs, &out, &graphs).args(["--shard-size", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (index, all) = check_shards(&out);
    assert_eq!(index.rows, 2, "both images encoded: {all:?}");
    assert!(all.iter().any(|s| s.ends_with("lat\\xe9.png")), "{all:?}");
    assert!(all.iter().any(|s| s.ends_with("lat\\xe8.png")), "{all:?}");
    // A third such name after the run is new work for --resume, not "already done".
    make_images(&tmp.join("more"), 1);
    std::fs::rename(
        tmp.join("more/img_0000.png"),
        imgs.join(std::ffi::OsStr::from_bytes(b"lat\xea.png")),
    )
    .unwrap();
    let o = run(sharded_cmd(&imgs, &out, &graphs).args(["--shard-size", "1", "--resume"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(index_of(&out).rows, 3, "{}", stderr(&o));
    // One-file mode keeps them apart too.
    let one = tmp.join("one.safetensors");
    let o = run(&mut encode_cmd(&imgs, &one, &graphs));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = sources(&one);
    assert_eq!(s.len(), 3);
    assert!(s.iter().all(|x| !x.contains('\u{fffd}')), "{s:?}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_in_one_file_mode_says_nothing_was_written() {
    use std::io::BufRead;
    let tmp = temp_dir("one_file_sigint");
    let files = make_images(&tmp.join("imgs"), 400);
    let graphs = tmp.join("graphs");
    let o = run(&mut encode_cmd(
        &files[0],
        &tmp.join("warm.safetensors"),
        &graphs,
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = tmp.join("one.safetensors");
    let mut child = sharded_cmd(&tmp.join("imgs"), &out, &graphs)
        .arg("-v")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once the run says it is encoding (the handler is in place by then).
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the run ended before encoding: {seen}");
        }
        seen.push_str(&line);
        if line.contains("one-file mode") {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("interrupted; nothing was written") && rest.contains("--shard-size"),
        "{seen}{rest}"
    );
    assert!(!out.exists());
}

#[test]
fn preprocess_out_never_overwrites_an_input_or_a_foreign_file() {
    let tmp = temp_dir("preprocess_out_guard");
    let files = make_images(&tmp.join("imgs"), 1);
    let img = std::fs::read(&files[0]).unwrap();
    let pre = |out: &Path| {
        run(bin()
            .args(["preprocess", "--model"])
            .arg(clip())
            .arg("--images")
            .arg(&files[0])
            .arg("--out")
            .arg(out))
    };
    let o = pre(&files[0]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("would overwrite the input image"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), img);
    let text = tmp.join("notes.safetensors");
    std::fs::write(&text, "keep me").unwrap();
    let o = pre(&text);
    assert!(
        stderr(&o).contains("was not written by distorch-vision"),
        "{}",
        stderr(&o)
    );
    // Its own pixels file is replaced.
    let ours = tmp.join("px.safetensors");
    for _ in 0..2 {
        let o = pre(&ours);
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

#[test]
fn empty_inputs_are_refused_in_every_mode_and_nothing_is_written() {
    let tmp = temp_dir("empty_inputs");
    let graphs = tmp.join("graphs");
    let empty = tmp.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.md"), b"no images here").unwrap();
    let sharded = tmp.join("shards");
    let one = tmp.join("one.safetensors");
    let npy = tmp.join("npy");
    let runs: [(&str, std::process::Command, &Path); 3] = [
        (
            "sharded",
            {
                let mut c = sharded_cmd(&empty, &sharded, &graphs);
                c.args(["--shard-size", "4"]);
                c
            },
            &sharded,
        ),
        ("one file", sharded_cmd(&empty, &one, &graphs), &one),
        (
            "npy folder",
            {
                let mut c = sharded_cmd(&empty, &npy, &graphs);
                c.args(["--format", "npy"]);
                c
            },
            &npy,
        ),
    ];
    for (mode, mut cmd, out) in runs {
        let o = run(&mut cmd);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{mode}: {err}");
        assert!(
            err.contains("no image files found in") && err.contains(&empty.display().to_string()),
            "{mode}: {err}"
        );
        assert!(!out.exists(), "{mode}: {} was written", out.display());
    }
    // The real run that follows is not refused as "already holds a run".
    let imgs = tmp.join("imgs");
    make_images(&imgs, 2);
    let o = run(sharded_cmd(&imgs, &sharded, &graphs).args(["--shard-size", "4"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_sharded_run_never_starts_in_a_folder_of_other_files() {
    let tmp = temp_dir("foreign_folder");
    let graphs = tmp.join("graphs");
    let imgs = tmp.join("imgs");
    make_images(&imgs, 3);
    // A folder of .npy outputs (written by this program, but not as a sharded run).
    let npy = tmp.join("npy");
    let o = run(sharded_cmd(&imgs, &npy, &graphs).args(["--format", "npy"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let before: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(&npy)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    for extra in [&["--resume"][..], &["--shard-size", "2"][..], &[][..]] {
        let o = run(sharded_cmd(&imgs, &npy, &graphs).args(extra));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.contains("holds files that are not a sharded run")
                && err.contains("image_embeds.npy"),
            "{extra:?}: {err}"
        );
        if extra == ["--resume"] {
            assert!(err.contains("nothing to resume"), "{err}");
        }
        let mut after: Vec<_> = std::fs::read_dir(&npy)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        after.sort();
        assert_eq!(after, before, "{extra:?}: files were added");
    }
    // Any other file too (a user's folder given as --out).
    let docs = tmp.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("letter.txt"), b"dear").unwrap();
    let o = run(sharded_cmd(&imgs, &docs, &graphs).args(["--shard-size", "2"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("letter.txt"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&docs).unwrap().count(), 1);
}

#[cfg(unix)]
#[test]
fn ctrl_c_answers_at_once_and_a_second_one_still_writes_the_encoded_rows() {
    use std::io::BufRead;
    use std::sync::mpsc;
    let tmp = temp_dir("shard_sigint_twice");
    let files = make_images(&tmp.join("imgs"), 40);
    let out = tmp.join("out");
    let graphs = tmp.join("graphs");
    let o = run(sharded_cmd(&files[0], &tmp.join("warm"), &graphs).args(["--shard-size", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Batches of 4 into shards of 100 (none finishes), each followed by 3 s standing in for a
    // long batch on a big model.
    let mut child = sharded_cmd(&tmp.join("imgs"), &out, &graphs)
        .args([
            "--shard-size",
            "100",
            "--batch-size",
            "4",
            "--throttle-ms",
            "3000",
        ])
        .env("DISTORCH_LOG", "warn,distorch_vision::job=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in err.lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let mut wait_for = |what: &str, within: Duration| -> Instant {
        let t = Instant::now();
        loop {
            let left = within.saturating_sub(t.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(what) {
                        return Instant::now();
                    }
                }
                Err(_) => panic!("no {what:?} within {within:?}; stderr so far:\n{seen}"),
            }
        }
    };
    wait_for("encoded a batch of 4 images", Duration::from_secs(60));
    // SAFETY: signals our own child process.
    let first = Instant::now();
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    // Said at once, not when the batch in flight ends (3 s from now).
    let said = wait_for("stopping after the current batch", Duration::from_secs(10));
    assert!(
        said - first < Duration::from_millis(1500),
        "took {:?}",
        said - first
    );
    let second = Instant::now();
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let stop = wait_for("stopped at ", Duration::from_secs(10));
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        stop - second < Duration::from_millis(2500),
        "the second Ctrl-C waited for the batch: {:?}\n{seen}",
        stop - second
    );
    let line = seen.lines().find(|l| l.starts_with("stopped at ")).unwrap();
    let n: usize = line["stopped at ".len()..line.find('/').unwrap()]
        .parse()
        .unwrap();
    assert!(line.contains("/40; rerun with --resume"), "{line}");
    // The rows encoded before the second Ctrl-C were written, although no shard was full.
    let (index, done) = check_shards(&out);
    assert!(!index.complete);
    assert!(
        n >= 4 && done.len() == n,
        "{n} rows, {} kept\n{seen}",
        done.len()
    );

    let o = run(sharded_cmd(&tmp.join("imgs"), &out, &graphs).args([
        "--shard-size",
        "100",
        "--batch-size",
        "4",
        "--resume",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (index, all) = check_shards(&out);
    assert!(index.complete);
    let want: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert_eq!(all, want, "every image once, in order");
}

#[test]
fn one_file_mode_shows_progress_like_sharded_mode() {
    let tmp = temp_dir("one_file_progress");
    let graphs = tmp.join("graphs");
    make_images(&tmp.join("imgs"), 6);
    // Not a terminal: plain "progress:" lines (every 5 s, and the last one).
    let o = run(
        sharded_cmd(&tmp.join("imgs"), &tmp.join("e.safetensors"), &graphs)
            .args(["--batch-size", "2"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("progress: 6/6 images (100.0%)")),
        "{err}"
    );
    // -q keeps it quiet.
    let o = run(
        sharded_cmd(&tmp.join("imgs"), &tmp.join("e.safetensors"), &graphs).args([
            "--batch-size",
            "2",
            "-q",
        ]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
}
