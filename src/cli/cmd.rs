//! What each verb does: calls the library and prints.

use distorch_vision::export::{self, Granularity};
use distorch_vision::job::batch::{self, EncodeJob, OutFormat};
use distorch_vision::job::yaml;
use distorch_vision::loader::{inventory, plan_model, resolve_model_in, ClipVision, LoadOptions};
use distorch_vision::model::Model;
use distorch_vision::{Error, ErrorKind, Result};

use super::args::{BenchArgs, Cli, Command, Common};
use super::print::human;

pub(crate) fn setup(common: &Common) -> Result<()> {
    if let Some(p) = &common.ort_library {
        distorch_vision::runtime::set_library_path(p)?;
    }
    Ok(())
}

pub(crate) fn run(cli: Cli) -> Result<()> {
    let folders = cli.folders.folders();
    // -q: errors only; progress and summaries on stderr are left out too.
    let quiet = cli.verbosity.quiet > 0;
    match cli.command {
        Command::Inspect { model, json } => inspect(&resolve_model_in(&model, &folders)?, json),
        Command::Export {
            model,
            out,
            granularity,
            common,
        } => {
            setup(&common)?;
            let m = Model::open(&resolve_model_in(&model, &folders)?)?;
            let t = std::time::Instant::now();
            let e = export::export(
                &m,
                out.as_deref(),
                common.graphs_dir.as_deref(),
                granularity,
            )?;
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
        Command::Bench(b) => bench(b),
        Command::Devices {
            json,
            simulate_devices,
        } => {
            let inv = inventory(simulate_devices.as_deref())?;
            // gpu: the CUDA provider's status (usable, or why not) beside the inventory.
            let cuda = distorch_vision::runtime::cuda::provider_status();
            if json {
                // {"devices": [...inventory...], "cuda_provider": {...}}
                let v = serde_json::json!({"devices": inv.to_json(), "cuda_provider": cuda});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", inv.render_table());
                println!("{}", cuda.render_line());
            }
            Ok(())
        }
        Command::Plan {
            model,
            loader,
            json,
        } => {
            let m = Model::open(&resolve_model_in(&model, &folders)?)?;
            let inv = inventory(loader.simulate_devices.as_deref())?;
            let p = plan_model(&m, &loader.options()?, &inv)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&p.to_json()).unwrap_or_default()
                );
            } else {
                print!("{}", p.render_table());
            }
            Ok(())
        }
        Command::Encode {
            model,
            images,
            pixels,
            crop,
            out,
            format,
            shard_size,
            resume,
            strict,
            decode_threads,
            throttle_ms,
            loader,
            batch_size,
            outputs,
            stream_blocks,
            dtype,
            common,
            gpu,
            json,
        } => {
            setup(&common)?;
            let format = format.unwrap_or(
                if out
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
                {
                    OutFormat::Npy
                } else {
                    OutFormat::Safetensors
                },
            );
            let job = EncodeJob {
                images,
                pixels,
                crop,
                batch_size,
                outputs,
                out,
                format,
                shard_size,
                resume,
                strict,
                decode_threads,
                throttle: std::time::Duration::from_millis(throttle_ms),
                model_label: model.clone(),
                progress: !quiet,
            };
            if !job.is_sharded() && resume {
                return Err(Error::invalid(
                    "--resume applies to sharded encoding (--shard-size N, or --out FOLDER)",
                ));
            }
            let cv = ClipVision::load(&LoadOptions {
                clip_vision: model,
                loader: loader.options()?,
                simulate_devices: loader.simulate_devices.clone(),
                graphs_dir: common.graphs_dir.clone(),
                granularity: Granularity::Blocks,
                force_streamed: stream_blocks,
                model_folders: folders,
                dtype,
                micro_batch: gpu.micro_batch,
            })?;
            let summary = batch::run_encode(&cv, &job)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            } else if !quiet {
                eprintln!("{summary}");
            }
            Ok(())
        }
        Command::Preprocess {
            model,
            images,
            crop,
            out,
            strict,
        } => {
            if out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
            {
                return Err(distorch_vision::Error::invalid(format!(
                    "--out {}: preprocess writes safetensors (what encode --pixels reads); name it .safetensors",
                    out.display()
                )));
            }
            let m = Model::open(&resolve_model_in(&model, &folders)?)?;
            // Never over the model, an input, or a file this program did not write.
            let protected = distorch_vision::job::out_guard::protected(m.path(), None, &images);
            distorch_vision::job::out_guard::check_targets(
                std::slice::from_ref(&out),
                &protected,
                None,
            )?;
            let spec = batch::preprocess_spec(&m, crop);
            let (px, sources, skipped) = if strict {
                let (px, src) = batch::preprocess_inputs(&images, &spec)
                    .map_err(|e| e.context("--strict: stopping at an unreadable image"))?;
                (px, src, Vec::new())
            } else {
                batch::preprocess_inputs_skipping(&images, &spec)?
            };
            batch::print_skipped(&skipped);
            batch::write_pixels(&out, &px, &sources, &model, &spec)?;
            if !quiet {
                eprintln!(
                    "preprocessed {} images into {} (pixel_values {:?}){}",
                    sources.len(),
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
        Command::Run { file, json, common } => {
            setup(&common)?;
            let settings = yaml::RunSettings {
                graphs_dir: common.graphs_dir.clone(),
                model_folders: folders,
                progress: !quiet,
                ..Default::default()
            };
            let results = yaml::run_file(&file, &settings)?;
            if json {
                let v = serde_json::json!({ "jobs": results });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else if !quiet {
                for r in &results {
                    eprintln!("{r}");
                }
            }
            Ok(())
        }
        Command::Models { json } => {
            let listing = folders.listing()?;
            if listing.models.is_empty() {
                return Err(Error::new(ErrorKind::NotFound, listing.nothing_found()));
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&listing.to_json()).unwrap_or_default()
                );
                return Ok(());
            }
            for e in &listing.models {
                println!(
                    "{:<48} {:<22} {:>12}  {}",
                    e.name,
                    e.family.as_deref().unwrap_or("(cannot load)"),
                    human(e.bytes),
                    e.path.display()
                );
                if let Some(p) = &e.problem {
                    println!("    {p}");
                }
            }
            if !listing.skipped.is_empty() && !quiet {
                eprintln!(
                    "({} other .safetensors/.sft file(s) are not vision towers and were left out; --json lists them)",
                    listing.skipped.len()
                );
            }
            Ok(())
        }
    }
}

pub(crate) fn bench(b: BenchArgs) -> Result<()> {
    setup(&b.common)?;
    let opts = LoadOptions {
        clip_vision: b.model.clone(),
        loader: b.loader.options()?,
        simulate_devices: b.loader.simulate_devices.clone(),
        graphs_dir: b.common.graphs_dir.clone(),
        dtype: b.dtype,
        ..Default::default()
    };
    let r = distorch_vision::runtime::bench::run_micro(
        &opts,
        b.batch_size,
        b.iters,
        !b.no_whole,
        b.gpu.micro_batch,
    )?;
    if b.json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    println!(
        "model      {} ({}), batch {}, {} iterations, {} threads",
        r.model, r.family, r.batch_size, r.iters, r.threads
    );
    let row = |name: &str, f: &distorch_vision::runtime::bench::Figures| {
        println!(
            "{name:<10} build {:>7.3} s  first output {:>7.3} s  {:>8.2} images/s  (median batch {:.3} s)",
            f.session_build_s, f.first_output_s, f.images_per_s, f.median_batch_s
        )
    };
    row("blocks", &r.blocks);
    if let Some(w) = &r.whole {
        row("whole", w);
    }
    if let Some(ratio) = r.split_ratio {
        println!("split      blocks/whole throughput = {ratio:.3}");
    }
    println!(
        "peak RSS   {} after the blocks, {} in all (model weights in the file: {})",
        human(r.blocks_peak_rss_bytes),
        human(r.peak_rss_bytes),
        human(r.model_bytes)
    );
    let verdict = match r.rss_verdict.as_str() {
        "within" => "within".to_string(),
        "over" => "OVER".to_string(),
        _ => format!(
            "not applicable: the model is smaller than the runtime's own {} before loading",
            human(r.baseline_rss_bytes)
        ),
    };
    println!(
        "RSS budget {} (1.25 × fp32 weights + one batch's activations): blocks {verdict}",
        human(r.rss_budget_bytes),
    );
    let blocks: Vec<String> = r
        .per_block_median_ms
        .iter()
        .map(|(n, ms)| format!("{n} {ms:.2}"))
        .collect();
    println!("per block  median ms: {}", blocks.join(", "));
    println!(
        "streamed   {} per pass{}",
        human(r.streamed_bytes_per_pass),
        r.micro_batch
            .map_or(String::new(), |m| format!(", micro-batch {m}"))
    );
    let u = &r.uploads;
    if let Some(overlap) = u.overlap() {
        let per = |x: f64| x / r.iters as f64 * 1e3;
        println!(
            "uploads    {} in {} copies; per pass: copy {:.1} ms, host waited {:.1} ms; overlap {:.0} %",
            human(u.bytes),
            u.uploads,
            per(u.copy_s),
            per(u.stall_s),
            overlap * 100.0
        );
    }
    Ok(())
}

pub(crate) fn inspect(model: &std::path::Path, json: bool) -> Result<()> {
    let m = Model::open(model)?;
    let c = &m.config;
    if json {
        let v = serde_json::json!({
            "path": m.path().display().to_string(),
            "family": c.family,
            "key_layout": m.keys.layout,
            "config": c,
            "model_bytes": m.model_bytes(),
            "dtypes": m.dtype_summary().iter().map(|(d, n, b)| serde_json::json!({"dtype": d, "tensors": n, "bytes": b})).collect::<Vec<_>>(),
            "outputs": m.output_names(),
            "outputs_on_request": m.on_request_output_names(),
            "blocks": m.blocks.iter().map(|b| serde_json::json!({"name": b.name, "bytes": b.bytes, "tensors": b.weights.len()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("model     {}", m.path().display());
    // A family read from a config file already names it: say it once.
    let family = c
        .family
        .strip_suffix(')')
        .and_then(|f| f.rsplit_once(" ("))
        .filter(|(_, label)| label.contains("config.json"))
        .map_or(c.family.as_str(), |(f, _)| f);
    println!(
        "family    {family} (from {}, {:?} keys)",
        c.source, m.keys.layout
    );
    println!(
        "config    D={} layers={} heads={} mlp={} act={:?} patch={} image={} tokens={} proj={} eps={:e}{}",
        c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size, c.activation, c.patch_size,
        c.image_size, c.tokens, c.projection_dim.map_or("-".into(), |p| p.to_string()), c.layer_norm_eps,
        if c.llava { " +LLaVA projector" } else { "" }
    );
    let dtypes: Vec<String> = m
        .dtype_summary()
        .iter()
        .map(|(d, n, b)| format!("{d}: {n} tensors, {}", human(*b)))
        .collect();
    println!("dtypes    {}", dtypes.join("; "));
    println!(
        "outputs   {} (on request: {})",
        m.output_names().join(", "),
        m.on_request_output_names().join(", ")
    );
    println!(
        "blocks    {} ({} in all)",
        m.blocks.len(),
        human(m.model_bytes())
    );
    for b in &m.blocks {
        println!(
            "  {:<10} {:>12}  {:>3} tensors",
            b.name,
            human(b.bytes),
            b.weights.len()
        );
    }
    Ok(())
}
