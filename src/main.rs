//! The `distorch-vision` command line: parses, calls the library, prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use distorch_vision::export::{self, ComputeDtype, Granularity};
use distorch_vision::image::Crop;
use distorch_vision::job::batch::{self, EncodeJob};
use distorch_vision::job::models::ModelFolders;
use distorch_vision::job::yaml;
use distorch_vision::loader::{inventory, plan_model, resolve_model_in, ClipVision, LoadOptions};
use distorch_vision::model::Model;
use distorch_vision::plan::{DonorPolicy, LoaderOptions};
use distorch_vision::Result;

#[derive(Parser)]
#[command(
    name = "distorch-vision",
    version,
    about = "CLIP Vision encoders as per-block ONNX Runtime sessions, placed across GPUs and the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    folders: FolderArgs,
}

/// Where model names are looked up (SPEC §2.5).
#[derive(Args, Clone)]
struct FolderArgs {
    /// ComfyUI folder whose models/clip_vision holds models (default: env COMFYUI_PATH).
    #[arg(long, global = true)]
    comfyui: Option<PathBuf>,
    /// An extra_model_paths.yaml (default: <comfyui>/extra_model_paths.yaml when present).
    #[arg(long, global = true)]
    extra_model_paths: Option<PathBuf>,
}

impl FolderArgs {
    fn folders(&self) -> ModelFolders {
        ModelFolders::new(self.comfyui.clone(), self.extra_model_paths.clone())
    }
}

#[derive(Args, Clone)]
struct Common {
    /// Root folder of exported graphs (default: graphs/ of the checkout, else ~/.cache/distorch-vision/graphs).
    #[arg(long)]
    graphs_dir: Option<PathBuf>,
    /// Path of libonnxruntime.so.1.31.1 (default: ORT_DYLIB_PATH, the checkout's .runtime/, the onnxruntime Python package).
    #[arg(long)]
    ort_library: Option<PathBuf>,
}

/// The loader inputs of SPEC §1, with the same names.
#[derive(Args, Clone)]
struct LoaderArgs {
    /// Compute device: `cpu` or `cuda:N` (default: cuda:0 when a GPU exists, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// GiB of weights to move off the compute device onto --donor-device (0.0–128.0).
    #[arg(long, default_value_t = 4.0, allow_negative_numbers = true)]
    virtual_vram_gb: f64,
    /// Where moved weights live.
    #[arg(long, default_value = "cpu")]
    donor_device: String,
    /// Explicit allocation, e.g. `cuda:0,60%;cuda:1,30%;cpu,10%` or `cuda:0,4gb;cpu,*`.
    #[arg(long, default_value = "")]
    expert_mode_allocations: String,
    /// Release other loaded models from the compute device first (true/false).
    #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
    eject_models: bool,
    /// CPU-homed blocks on a GPU compute device: `stream` their weights, or `execute` on the CPU.
    #[arg(long, default_value = "stream")]
    donor_policy: String,
    /// Replace the device inventory for planning: `cuda:0=24GiB,cuda:1=12GiB/10GiB,cpu=64GiB` (total[/free]).
    #[arg(long)]
    simulate_devices: Option<String>,
}

impl LoaderArgs {
    fn options(&self) -> Result<LoaderOptions> {
        Ok(LoaderOptions {
            device: self.device.clone(),
            virtual_vram_gb: self.virtual_vram_gb,
            donor_device: self.donor_device.clone(),
            expert_mode_allocations: self.expert_mode_allocations.clone(),
            eject_models: self.eject_models,
            donor_policy: self.donor_policy.parse::<DonorPolicy>()?,
        })
    }
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// List the devices this process sees (GPUs through the CUDA driver, and the CPU).
    Devices {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        simulate_devices: Option<String>,
    },
    /// Plan a model's placement across devices (reads only the header and config).
    Plan {
        #[arg(long)]
        model: String,
        #[command(flatten)]
        loader: LoaderArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show a model's family, configuration, dtypes and blocks.
    Inspect {
        #[arg(long)]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Write one ONNX graph per block (and a manifest) for a model.
    Export {
        #[arg(long)]
        model: String,
        /// Output folder (default: <graphs-dir>/<model-id>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// `blocks` (default) or `whole` (also one whole-model graph).
        #[arg(long, default_value = "blocks")]
        granularity: Granularity,
        #[command(flatten)]
        common: Common,
    },
    /// Encode images (or preprocessed pixels) into embeddings; sharded with --shard-size or a folder --out.
    Encode {
        #[arg(long)]
        model: String,
        /// Image files and folders (folders expand recursively, sorted).
        #[arg(long, num_args = 1.., conflicts_with = "pixels", required_unless_present = "pixels")]
        images: Vec<PathBuf>,
        /// A safetensors file with one NCHW f32 tensor, used as is.
        #[arg(long)]
        pixels: Option<PathBuf>,
        /// `center` (default) or `none` (stretch).
        #[arg(long, default_value = "center")]
        crop: Crop,
        /// Output safetensors file, or a folder of shards (sharded mode).
        #[arg(long)]
        out: PathBuf,
        /// Rows per shard; turns on sharded mode (--out is then a folder).
        #[arg(long)]
        shard_size: Option<usize>,
        /// Sharded mode: skip images already in finished shards of --out.
        #[arg(long)]
        resume: bool,
        /// Sharded mode: abort on an unreadable image instead of skipping it.
        #[arg(long)]
        strict: bool,
        /// Sharded mode: image decoder threads.
        #[arg(long, default_value_t = 2)]
        decode_threads: usize,
        /// Test hook: sleep this many milliseconds after each encoded batch.
        #[arg(long, default_value_t = 0, hide = true)]
        throttle_ms: u64,
        #[command(flatten)]
        loader: LoaderArgs,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Comma-separated outputs (default: all the model has).
        #[arg(long, value_delimiter = ',')]
        outputs: Vec<String>,
        /// Test hook: run these blocks (comma-separated, or `all`) with their weights fed as inputs each pass.
        #[arg(long, value_delimiter = ',', hide = true)]
        stream_blocks: Vec<String>,
        /// Compute precision: `fp32` (default, the reference), `int8` (CPU, approximate), `fp16` (for CUDA; runs on the CPU only to check results).
        #[arg(long, default_value = "fp32")]
        dtype: ComputeDtype,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Decode and preprocess images into one NCHW `pixel_values` tensor (safetensors).
    Preprocess {
        #[arg(long)]
        model: String,
        /// Image files and folders (folders expand recursively, sorted).
        #[arg(long, num_args = 1.., required = true)]
        images: Vec<PathBuf>,
        /// `center` (default) or `none` (stretch).
        #[arg(long, default_value = "center")]
        crop: Crop,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the jobs of a YAML file in order (see examples/).
    Run {
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// List the clip_vision models in the model folders (--comfyui, COMFYUI_PATH, extra_model_paths.yaml).
    Models {
        #[arg(long)]
        json: bool,
    },
    /// Throughput of the block pipeline against one whole-model session on the same weights.
    Bench(BenchArgs),
}

/// Options of the GPU path.
#[derive(Args, Clone)]
struct GpuArgs {
    /// Cut the images into micro-batches of N that flow through the device segments concurrently.
    #[arg(long)]
    micro_batch: Option<usize>,
}

/// Flags of `bench`.
#[derive(Args)]
struct BenchArgs {
    #[arg(long)]
    model: String,
    #[command(flatten)]
    loader: LoaderArgs,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Timed iterations after one warm-up batch (the median is reported).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Skip the whole-model session (no split-overhead ratio).
    #[arg(long)]
    no_whole: bool,
    #[arg(long)]
    json: bool,
    /// Compute precision: `fp32` (default, the reference), `int8` (CPU, approximate), `fp16` (for CUDA; runs on the CPU only to check results).
    #[arg(long, default_value = "fp32")]
    dtype: ComputeDtype,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn main() -> ExitCode {
    let filter = std::env::var("DISTORCH_LOG").unwrap_or_else(|_| "warn,ort=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = run(cli);
    // Every model was dropped with `run`; release the environment (joining ONNX Runtime's
    // thread pool) before exit handlers free what its threads still read.
    distorch_vision::runtime::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn setup(common: &Common) -> Result<()> {
    if let Some(p) = &common.ort_library {
        distorch_vision::runtime::set_library_path(p)?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let folders = cli.folders.folders();
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
            println!(
                "{} {} blocks to {} in {:.2} s",
                if e.reused { "reused" } else { "exported" },
                e.manifest.blocks.len(),
                e.dir.display(),
                t.elapsed().as_secs_f64()
            );
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
        } => {
            setup(&common)?;
            let job = EncodeJob {
                images,
                pixels,
                crop,
                batch_size,
                outputs,
                out,
                shard_size,
                resume,
                strict,
                decode_threads,
                throttle: std::time::Duration::from_millis(throttle_ms),
                model_label: model.clone(),
                ..Default::default()
            };
            if !job.is_sharded() && (resume || strict) {
                return Err(distorch_vision::Error::invalid(
                    "--resume and --strict apply to sharded encoding (--shard-size N, or --out FOLDER)",
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
            eprintln!("{summary}");
            Ok(())
        }
        Command::Preprocess {
            model,
            images,
            crop,
            out,
        } => {
            let m = Model::open(&resolve_model_in(&model, &folders)?)?;
            let spec = batch::preprocess_spec(&m, crop);
            let (px, sources) = batch::preprocess_inputs(&images, &spec)?;
            batch::write_pixels(&out, &px, &sources, &model)?;
            eprintln!(
                "preprocessed {} images into {} (pixel_values {:?})",
                sources.len(),
                out.display(),
                px.shape()
            );
            Ok(())
        }
        Command::Run { file, common } => {
            setup(&common)?;
            let settings = yaml::RunSettings {
                graphs_dir: common.graphs_dir.clone(),
                model_folders: folders,
                progress: true,
                ..Default::default()
            };
            for line in yaml::run_file(&file, &settings)? {
                eprintln!("{line}");
            }
            Ok(())
        }
        Command::Models { json } => {
            let list = folders.list()?;
            if json {
                let v = serde_json::json!({
                    "folders": folders.folders()?.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                    "models": list,
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let dirs = folders.folders()?;
                if dirs.is_empty() {
                    eprintln!("no model folders: pass --comfyui PATH, set COMFYUI_PATH, or give --extra-model-paths FILE");
                }
                for e in &list {
                    println!(
                        "{:<48} {:>12}  {}",
                        e.name,
                        human(e.bytes),
                        e.path.display()
                    );
                }
            }
            Ok(())
        }
    }
}

fn bench(b: BenchArgs) -> Result<()> {
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
    println!(
        "RSS budget {} (1.25 × fp32 weights + one batch's activations): blocks {}",
        human(r.rss_budget_bytes),
        if r.blocks_peak_rss_bytes <= r.rss_budget_bytes {
            "within"
        } else {
            "OVER"
        }
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

fn inspect(model: &std::path::Path, json: bool) -> Result<()> {
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
            "blocks": m.blocks.iter().map(|b| serde_json::json!({"name": b.name, "bytes": b.bytes, "tensors": b.weights.len()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    println!("model     {}", m.path().display());
    println!(
        "family    {} (from {}, {:?} keys)",
        c.family, c.source, m.keys.layout
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
    println!("outputs   {}", m.output_names().join(", "));
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

fn human(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1 << 20) as f64 {
        format!("{:.2} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}
