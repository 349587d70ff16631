//! What each verb does: one `cmd_*` function per verb, which calls the library and prints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use distorch_vision::export::ComputeDtype;
use distorch_vision::export::{self, Granularity};
use distorch_vision::image::Crop;
use distorch_vision::job::batch;
use distorch_vision::job::{out_guard, summary, yaml};
use distorch_vision::loader::{
    add_xpus, inventory, inventory_for, plan_with_engines, ClipVision, LoadOptions,
};
use distorch_vision::model::folders::ModelFolders;
use distorch_vision::model::Model;
use distorch_vision::{Error, ErrorKind, Result};

use super::args::{BenchArgs, Common, EncodeArgs, LoaderArgs};
use super::print;

/// Points the runtime at `--ort-library` when given.
pub(crate) fn setup(common: &Common) -> Result<()> {
    if let Some(p) = &common.ort_library {
        distorch_vision::runtime::set_library_path(p)?;
    }
    Ok(())
}

/// `devices`: the inventory, the CUDA provider's and the OpenVINO plugin's status.
pub(crate) fn cmd_devices(
    json: bool,
    simulate_devices: Option<&str>,
    openvino_ep: Option<&Path>,
) -> Result<()> {
    let mut inv = inventory(simulate_devices)?;
    // The CUDA provider's status (usable, or why not) beside the inventory.
    let cuda = distorch_vision::runtime::gpu::provider_status();
    // The OpenVINO plugin: its devices and capabilities (loads OpenVINO when found); its Intel
    // GPUs join a real inventory as xpu:N.
    let openvino = distorch_vision::runtime::openvino::status(openvino_ep);
    if !inv.simulated && openvino.library.is_some() {
        add_xpus(&mut inv, openvino_ep, "listing Intel GPUs")?;
    }
    if json {
        // {"devices": [...inventory...], "cuda_provider": {...}, "openvino": {...}}
        print::json(&serde_json::json!({
            "devices": inv.to_json(),
            "cuda_provider": cuda,
            "openvino": openvino,
        }));
    } else {
        print!("{}", inv.render_table());
        println!("{}", cuda.render_line());
        print!("{}", openvino.render());
    }
    Ok(())
}

/// `plan`: a model's placement, as a table or JSON.
pub(crate) fn cmd_plan(
    model: &str,
    loader: &LoaderArgs,
    dtype: ComputeDtype,
    json: bool,
    folders: &ModelFolders,
) -> Result<()> {
    let m = Model::open(&folders.resolve(model)?)?;
    let opts = loader.options();
    let ov = loader.openvino_ep.as_deref();
    let inv = inventory_for(loader.simulate_devices.as_deref(), &opts, ov)?;
    let (p, engines) = plan_with_engines(&m, &opts, &inv, dtype, ov)?;
    if let Some(n) = &engines.note {
        tracing::info!("{n}");
    }
    if json {
        print::json(&p.to_json());
    } else {
        print!("{}", p.render_table());
    }
    Ok(())
}

/// `inspect`: a model's family, configuration, dtypes and blocks.
pub(crate) fn cmd_inspect(model: &str, json: bool, folders: &ModelFolders) -> Result<()> {
    let m = Model::open(&folders.resolve(model)?)?;
    if json {
        print::json(&print::inspect_json(&m));
    } else {
        print::inspect_text(&m);
    }
    Ok(())
}

/// `export`: one ONNX graph per block (or reuse an existing export).
pub(crate) fn cmd_export(
    model: &str,
    out: Option<&Path>,
    granularity: Granularity,
    common: &Common,
    folders: &ModelFolders,
) -> Result<()> {
    setup(common)?;
    let m = Model::open(&folders.resolve(model)?)?;
    let t = Instant::now();
    let e = export::export(&m, out, common.graphs_dir.as_deref(), granularity)?;
    let n = e.manifest.blocks.len();
    if e.reused {
        println!(
            "reused the existing export of {n} blocks in {} ({:.2} s)",
            e.dir.display(),
            t.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "exported {n} blocks to {} in {:.2} s",
            e.dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `encode`: images or pixels into embeddings (one file, or shards).
pub(crate) fn cmd_encode(a: EncodeArgs, folders: ModelFolders, quiet: bool) -> Result<()> {
    setup(&a.common)?;
    let json = a.json;
    let (load, job) = a.into_job(folders, quiet)?;
    let cv = ClipVision::load(&load)?;
    let summary = batch::run_encode(&cv, &job)?;
    if json {
        print::json(&summary);
    } else if !quiet {
        eprintln!("{summary}");
    }
    Ok(())
}

/// `preprocess`: images into one `pixel_values` safetensors file.
pub(crate) fn cmd_preprocess(
    model: &str,
    images: &[PathBuf],
    crop: Crop,
    out: &Path,
    strict: bool,
    folders: &ModelFolders,
    quiet: bool,
) -> Result<()> {
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        return Err(Error::invalid(format!(
            "--out {}: preprocess writes safetensors (what encode --pixels reads); name it .safetensors",
            out.display()
        )));
    }
    let m = Model::open(&folders.resolve(model)?)?;
    // Never over the model, an input, or a file this program did not write.
    let protected = out_guard::protected(m.path(), None, images);
    out_guard::check_targets(&[out.to_path_buf()], &protected, None)?;
    let spec = m.config.preprocess_spec(crop);
    let (px, sources, skipped) = if strict {
        let (px, src) = batch::preprocess_inputs(images, &spec)
            .map_err(|e| e.context("`strict`: stopping at an unreadable image"))?;
        (px, src, Vec::new())
    } else {
        batch::preprocess_inputs_skipping(images, &spec)?
    };
    summary::print_skipped(&skipped);
    batch::write_pixels(out, &px, &sources, model, &spec)?;
    if !quiet {
        eprintln!(
            "preprocessed {} into {} (pixel_values {:?}){}",
            summary::images(sources.len()),
            out.display(),
            px.shape(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; {} skipped", skipped.len())
            }
        );
    }
    Ok(())
}

/// `run`: the jobs of a YAML file.
pub(crate) fn cmd_run(
    file: &Path,
    json: bool,
    common: &Common,
    folders: ModelFolders,
    quiet: bool,
) -> Result<()> {
    setup(common)?;
    let settings = yaml::RunSettings {
        graphs_dir: common.graphs_dir.clone(),
        model_folders: folders,
        progress: !quiet,
        ..Default::default()
    };
    let results = yaml::run_file(file, &settings)?;
    if json {
        print::json(&serde_json::json!({ "jobs": results }));
    } else if !quiet {
        for r in &results {
            eprintln!("{r}");
        }
    }
    Ok(())
}

/// `models`: the vision towers in the model folders; none found is an error.
pub(crate) fn cmd_models(json: bool, folders: &ModelFolders, quiet: bool) -> Result<()> {
    let listing = folders.listing()?;
    if listing.models.is_empty() {
        return Err(Error::new(ErrorKind::NotFound, listing.nothing_found()));
    }
    if json {
        print::json(&listing.to_json());
    } else {
        print::models_table(&listing, quiet);
    }
    Ok(())
}

/// `bench`: the block pipeline against one whole-model session.
pub(crate) fn cmd_bench(b: BenchArgs) -> Result<()> {
    setup(&b.common)?;
    let opts = LoadOptions {
        dtype: b.dtype,
        ..b.loader.load_options(&b.model, &b.common)
    };
    let r = distorch_vision::bench::run_micro(
        &opts,
        b.batch_size,
        b.iters,
        !b.no_whole,
        b.gpu.micro_batch,
    )?;
    if b.json {
        print::json(&r);
    } else {
        print::bench_report(&r);
    }
    Ok(())
}

/// `clean`: the exports in the graphs folder; those of `model`, of missing models, or all
/// removed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cmd_clean(
    model: Option<&str>,
    missing: bool,
    all: bool,
    graphs_dir: Option<&Path>,
    json: bool,
    folders: &ModelFolders,
    quiet: bool,
) -> Result<()> {
    use distorch_vision::export::clean::{list_exports, matches_model, remove_export};
    let root = graphs_dir.map_or_else(export::default_graphs_root, Path::to_path_buf);
    let exports = list_exports(&root)?;
    let model_file = model.and_then(|m| folders.resolve(m).ok());
    let chosen = |e: &&distorch_vision::export::clean::ExportEntry| {
        all || (missing && !e.model_exists)
            || model.is_some_and(|m| matches_model(e, m, model_file.as_deref()))
    };
    let selected: Vec<_> = exports.iter().filter(chosen).cloned().collect();
    // A deleted model named by its file name alone may match exports of several models.
    if let (Some(m), false) = (model, all) {
        let mut sources: Vec<&str> = selected
            .iter()
            .filter(|e| !e.model_exists)
            .filter_map(|e| e.model.as_deref())
            .collect();
        sources.sort_unstable();
        sources.dedup();
        if model_file.is_none() && sources.len() > 1 {
            return Err(Error::invalid(format!(
                "model {m:?} names exports of {} deleted models ({}); give the model's full path, or --missing for all of them",
                sources.len(),
                sources.join(", ")
            )));
        }
    }
    if let (Some(m), true) = (model, selected.is_empty()) {
        if !all {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no export of {m:?} in {} ({} export{} there{})",
                    root.display(),
                    exports.len(),
                    if exports.len() == 1 { "" } else { "s" },
                    if exports.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": {}",
                            exports
                                .iter()
                                .map(|e| e.model.as_deref().unwrap_or("unfinished"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
            ));
        }
    }
    let mut freed = 0u64;
    let mut removed = Vec::new();
    for e in &selected {
        freed += remove_export(e)?;
        removed.push(e.dir.clone());
    }
    if json {
        print::json(&serde_json::json!({
            "graphs_dir": root,
            "exports": exports,
            "removed": removed,
            "freed_bytes": freed,
        }));
    } else if !quiet {
        print::exports_report(&root, &exports, &removed, freed);
    }
    Ok(())
}
