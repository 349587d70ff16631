//! The `distorch-vision` command line: parses, calls the library, prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use distorch_vision::export::{self, ComputeDtype, Granularity};
use distorch_vision::image::Crop;
use distorch_vision::job::batch::{self, EncodeJob, OutFormat};
use distorch_vision::job::interrupt;
use distorch_vision::job::yaml;
use distorch_vision::loader::{inventory, plan_model, resolve_model_in, ClipVision, LoadOptions};
use distorch_vision::model::folders::ModelFolders;
use distorch_vision::model::Model;
use distorch_vision::plan::{DonorPolicy, LoaderOptions};
use distorch_vision::{Error, ErrorKind, Result};

const ABOUT_LONG: &str = "\
CLIP Vision encoders (the .safetensors files of ComfyUI's models/clip_vision) split into one
ONNX Runtime session per block, placed across GPUs and the CPU by a DisTorch2 planner.";

const LOGGING_HELP: &str = "\
Logging (on stderr):
  -v / -vv / -vvv     info / debug / trace;  -q errors only (no progress or summaries either)
  DISTORCH_LOG=FILTER a tracing filter, e.g. `info` or `warn,distorch_vision=debug`
  RUST_LOG=FILTER     used when DISTORCH_LOG is not set
  Precedence: -v/-q, then DISTORCH_LOG, then RUST_LOG, then `warn,ort=error`. ONNX Runtime's own
  messages (target `ort`) stay at warn or quieter unless the filter names `ort`, e.g.
  DISTORCH_LOG=info,ort=info.

Errors: exit status 1 and one `error: ...` line on stderr (2 for a bad command line). With --json
the error is also printed on stdout as one object: {\"error\": {\"kind\": ..., \"message\": ...}}.

Environment: COMFYUI_PATH (model folder root), ORT_DYLIB_PATH (ONNX Runtime library),
DISTORCH_THREADS (CPU threads, default every core).";

#[derive(Parser)]
#[command(
    name = "distorch-vision",
    version,
    about = "CLIP Vision encoders as per-block ONNX Runtime sessions, placed across GPUs and the CPU",
    long_about = ABOUT_LONG,
    after_help = LOGGING_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    folders: FolderArgs,
    #[command(flatten)]
    verbosity: Verbosity,
}

/// -v / -q (global).
#[derive(Args, Clone)]
#[command(next_help_heading = "Logging")]
struct Verbosity {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (wins over DISTORCH_LOG / RUST_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less output on stderr: errors only (no warnings, progress or summaries).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
}

/// Where model names are looked up (contract §2.5).
#[derive(Args, Clone)]
#[command(next_help_heading = "Model folders")]
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
#[command(next_help_heading = "Runtime")]
struct Common {
    /// Root folder of exported graphs (default: graphs/ of the checkout, else ~/.cache/distorch-vision/graphs).
    #[arg(long)]
    graphs_dir: Option<PathBuf>,
    /// Path of libonnxruntime.so.1.31.1 (default: ORT_DYLIB_PATH, the checkout's .runtime/, the onnxruntime Python package).
    #[arg(long)]
    ort_library: Option<PathBuf>,
}

/// The loader inputs of contract §1, with the same names.
#[derive(Args, Clone)]
#[command(next_help_heading = "Loader (placement across devices)")]
struct LoaderArgs {
    /// Compute device: `cpu` or `cuda:N` (default: cuda:0 when a GPU exists, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// GiB of weights to move off the compute device onto --donor-device (0.0–128.0) [default: 4].
    #[arg(long, allow_negative_numbers = true)]
    virtual_vram_gb: Option<f64>,
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
    #[command(
        after_help = "Examples:\n  distorch-vision devices\n  distorch-vision devices --json --simulate-devices cuda:0=24GiB,cuda:1=12GiB/10GiB"
    )]
    Devices {
        /// Print the inventory and the CUDA provider's status as one JSON object.
        #[arg(long)]
        json: bool,
        /// Show a simulated inventory instead: `cuda:0=24GiB,cuda:1=12GiB/10GiB,cpu=64GiB` (total[/free]).
        #[arg(long, value_name = "SPEC")]
        simulate_devices: Option<String>,
    },
    /// Plan a model's placement across devices (reads only the header and config).
    #[command(
        after_help = "Examples:\n  distorch-vision plan --model clip_vision_h.safetensors --comfyui ~/ComfyUI\n  distorch-vision plan --model m.safetensors --expert-mode-allocations 'cuda:0,60%;cpu,*' --simulate-devices cuda:0=8GiB"
    )]
    Plan {
        /// The model: a .safetensors path, or a name in the model folders (see `models`).
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        #[command(flatten)]
        loader: LoaderArgs,
        /// Print the plan as JSON (contract §5.4) instead of a table.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Show a model's family, configuration, dtypes and blocks.
    #[command(
        after_help = "Example:\n  distorch-vision inspect --model sigclip_vision_patch14_384.safetensors --comfyui ~/ComfyUI"
    )]
    Inspect {
        /// The model: a .safetensors path, or a name in the model folders (see `models`).
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        /// Print everything as one JSON object.
        #[arg(long, help_heading = "Output")]
        json: bool,
    },
    /// Write one ONNX graph per block (and a manifest) for a model.
    #[command(
        after_help = "Example:\n  distorch-vision export --model clip_vision_h.safetensors --out /tmp/vit-h-graphs"
    )]
    Export {
        /// The model: a .safetensors path, or a name in the model folders (see `models`).
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        /// Output folder (default: <graphs-dir>/<model-id>/).
        #[arg(long, help_heading = "Output")]
        out: Option<PathBuf>,
        /// `blocks` (default) or `whole` (also one whole-model graph).
        #[arg(long, default_value = "blocks", help_heading = "Output")]
        granularity: Granularity,
        #[command(flatten)]
        common: Common,
    },
    /// Encode images (or preprocessed pixels) into embeddings; sharded with --shard-size or a folder --out.
    #[command(
        after_help = "Examples:\n  distorch-vision encode --model clip_vision_h --comfyui ~/ComfyUI --images photos/ --out emb.safetensors\n  distorch-vision encode --model m.safetensors --images photos/ --out shards/ --shard-size 1024 --resume\n  distorch-vision encode --model m.safetensors --pixels px.safetensors --out emb.safetensors --outputs image_embeds --json"
    )]
    Encode {
        /// The model: a .safetensors path, or a name in the model folders (see `models`).
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        /// Image files and folders (folders expand recursively, sorted).
        #[arg(long, num_args = 1.., conflicts_with = "pixels", required_unless_present = "pixels", help_heading = "Input")]
        images: Vec<PathBuf>,
        /// A safetensors file with one NCHW f32 tensor, used as is.
        #[arg(long, help_heading = "Input")]
        pixels: Option<PathBuf>,
        /// `center` (default) or `none` (stretch).
        #[arg(long, default_value = "center", help_heading = "Input")]
        crop: Crop,
        /// Output file (or, with --format npy, a folder), or a folder of shards (sharded mode).
        #[arg(long, help_heading = "Output")]
        out: PathBuf,
        /// `safetensors`, or `npy`: --out x.npy writes one .npy (one output; row sources in
        /// x.sources.json), another --out a folder of <output>.npy and sources.json.
        /// Default: npy when --out ends in .npy, else safetensors.
        #[arg(long, help_heading = "Output")]
        format: Option<OutFormat>,
        /// Comma-separated outputs (default: all the model has but all_hidden_states, which is
        /// computed only when named here).
        #[arg(long, value_delimiter = ',', help_heading = "Output")]
        outputs: Vec<String>,
        /// Print the summary as one JSON object on stdout (encoded, skipped, outputs, seconds, ...).
        #[arg(long, help_heading = "Output")]
        json: bool,
        /// Rows per shard; turns on sharded mode (--out is then a folder).
        #[arg(long, help_heading = "Sharded mode")]
        shard_size: Option<usize>,
        /// Sharded mode: skip images already in finished shards of --out (same model, outputs, crop and dtype).
        #[arg(long, help_heading = "Sharded mode")]
        resume: bool,
        /// Abort on an unreadable image instead of skipping it (and listing it).
        #[arg(long, help_heading = "Input")]
        strict: bool,
        /// Sharded mode: image decoder threads.
        #[arg(long, default_value_t = 2, help_heading = "Sharded mode")]
        decode_threads: usize,
        /// Test hook: sleep this many milliseconds after each encoded batch.
        #[arg(long, default_value_t = 0, hide = true)]
        throttle_ms: u64,
        #[command(flatten)]
        loader: LoaderArgs,
        /// Images per forward pass (more uses more activation memory).
        #[arg(long, default_value_t = 8, help_heading = "Compute")]
        batch_size: usize,
        /// Test hook: run these blocks (comma-separated, or `all`) with their weights fed as inputs each pass.
        #[arg(long, value_delimiter = ',', hide = true)]
        stream_blocks: Vec<String>,
        /// Compute precision: `fp32` (default, the reference), `int8` (CPU, approximate), `fp16` (for CUDA; runs on the CPU only to check results).
        #[arg(long, default_value = "fp32", help_heading = "Compute")]
        dtype: ComputeDtype,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Decode and preprocess images into one NCHW `pixel_values` tensor (safetensors).
    #[command(
        after_help = "Example:\n  distorch-vision preprocess --model m.safetensors --images photos/ --out px.safetensors\n  distorch-vision encode --model m.safetensors --pixels px.safetensors --out emb.safetensors"
    )]
    Preprocess {
        /// The model whose image size and mean/std to use: a path, or a name in the model folders.
        #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
        model: String,
        /// Image files and folders (folders expand recursively, sorted).
        #[arg(long, num_args = 1.., required = true)]
        images: Vec<PathBuf>,
        /// `center` (default) or `none` (stretch).
        #[arg(long, default_value = "center")]
        crop: Crop,
        /// Output safetensors file holding `pixel_values` [N,3,S,S] f32 (input of `encode --pixels`;
        /// sources and preprocessing in its metadata).
        #[arg(long)]
        out: PathBuf,
        /// Abort on an unreadable image instead of skipping it (and listing it).
        #[arg(long)]
        strict: bool,
    },
    /// Run the jobs of a YAML file in order, after checking them all (see examples/).
    #[command(
        after_help = "Examples:\n  distorch-vision run examples/encode_folder.yaml\n  distorch-vision run examples/multi_job.yaml --json"
    )]
    Run {
        /// The YAML run file: one job (a mapping) or `jobs: [...]`; paths in it are relative to it.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print one JSON object on stdout: {"jobs": [{"job", "encoded", ...}]}.
        #[arg(long, help_heading = "Output")]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List the clip_vision models in the model folders (--comfyui, COMFYUI_PATH, extra_model_paths.yaml).
    ///
    /// Only files that look like a vision tower are listed (read from the header), with their
    /// family. When none is found, the folders searched are named and the exit status is 1.
    #[command(
        after_help = "Examples:\n  distorch-vision models --comfyui ~/ComfyUI\n  distorch-vision models --extra-model-paths ~/ComfyUI/extra_model_paths.yaml --json"
    )]
    Models {
        /// Print {"folders", "searched", "models", "skipped"} as JSON (models with name, path, bytes, family).
        #[arg(long)]
        json: bool,
    },
    /// Throughput of the block pipeline against one whole-model session on the same weights.
    #[command(
        after_help = "Example:\n  distorch-vision bench --model m.safetensors --device cpu --batch-size 8 --iters 5"
    )]
    Bench(BenchArgs),
}

/// Options of the GPU path.
#[derive(Args, Clone)]
#[command(next_help_heading = "GPU")]
struct GpuArgs {
    /// Cut the images into micro-batches of N that flow through the device segments concurrently.
    #[arg(long)]
    micro_batch: Option<usize>,
}

/// Flags of `bench`.
#[derive(Args)]
struct BenchArgs {
    /// The model: a .safetensors path, or a name in the model folders (see `models`).
    #[arg(long, value_name = "NAME|PATH", visible_aliases = ["clip-vision", "clip-name"])]
    model: String,
    #[command(flatten)]
    loader: LoaderArgs,
    /// Images per timed batch.
    #[arg(long, default_value_t = 8, help_heading = "Benchmark")]
    batch_size: usize,
    /// Timed iterations after one warm-up batch (the median is reported).
    #[arg(long, default_value_t = 5, help_heading = "Benchmark")]
    iters: usize,
    /// Skip the whole-model session (no split-overhead ratio).
    #[arg(long, help_heading = "Benchmark")]
    no_whole: bool,
    /// Print the report as JSON.
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// Compute precision: `fp32` (default, the reference), `int8` (CPU, approximate), `fp16` (for CUDA; runs on the CPU only to check results).
    #[arg(long, default_value = "fp32", help_heading = "Benchmark")]
    dtype: ComputeDtype,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn main() -> ExitCode {
    // Output piped into `head` ends the process quietly (as for any Unix tool), rather than
    // panicking in println! on EPIPE.
    // SAFETY: restoring the default action of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind as K;
            let shows = matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if !shows && std::env::args_os().any(|a| a == "--json") {
                // The whole message (the missing argument names follow the first line).
                let msg = e.to_string();
                let text = msg
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                print_json_error("usage", text.trim_start_matches("error: "));
            }
            e.exit();
        }
    };
    init_logging(&cli.verbosity);
    let json = cli.command.json();
    // Sharded runs stop cleanly on Ctrl-C / SIGTERM (see job::interrupt).
    interrupt::enable();
    let result = run(cli);
    // Every model was dropped with `run`; release the environment (joining ONNX Runtime's
    // thread pool) before exit handlers free what its threads still read.
    distorch_vision::runtime::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if interrupt::requested() => {
            if json {
                print_json_error("interrupted", e.message());
            }
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            if json {
                print_json_error(kind_name(e.kind()), e.message());
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Under `--json` an error is also one object on stdout, so a script reads one thing.
fn print_json_error(kind: &str, message: &str) {
    let v = serde_json::json!({"error": {"kind": kind, "message": message}});
    println!("{v}");
}

fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Io => "io",
        ErrorKind::InvalidModel => "invalid_model",
        ErrorKind::DoesNotFit => "does_not_fit",
        ErrorKind::Runtime => "runtime",
    }
}

impl Command {
    /// Whether the user asked for JSON output.
    fn json(&self) -> bool {
        match self {
            Command::Devices { json, .. }
            | Command::Plan { json, .. }
            | Command::Inspect { json, .. }
            | Command::Encode { json, .. }
            | Command::Run { json, .. }
            | Command::Models { json } => *json,
            Command::Bench(b) => b.json,
            Command::Export { .. } | Command::Preprocess { .. } => false,
        }
    }
}

/// The tracing filter: -v/-q, else DISTORCH_LOG, else RUST_LOG, else `warn,ort=error`; ONNX
/// Runtime's messages (target `ort`) capped at warn unless the filter names `ort`.
fn log_filter(v: &Verbosity) -> String {
    let env = |name: &str| std::env::var(name).ok().filter(|s| !s.trim().is_empty());
    let base = match (v.verbose, v.quiet) {
        (0, 0) => env("DISTORCH_LOG")
            .or_else(|| env("RUST_LOG"))
            // ONNX Runtime's warnings (e.g. one per CUDA session about node placement) only
            // when asked for.
            .unwrap_or_else(|| "warn,ort=error".into()),
        (0, _) => "error".into(),
        (1, _) => "info".into(),
        (2, _) => "debug".into(),
        _ => "trace".into(),
    };
    cap_ort(&base)
}

/// Appends `ort=warn` to a filter whose default level is more verbose than warn and that
/// does not name `ort` itself (ONNX Runtime's info messages are whole session dumps).
fn cap_ort(filter: &str) -> String {
    use tracing_subscriber::filter::LevelFilter;
    let directives: Vec<&str> = filter.split(',').map(str::trim).collect();
    let names_ort = directives.iter().any(|d| {
        d.strip_prefix("ort")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['=', ':', '[']))
    });
    let default = directives
        .iter()
        .filter_map(|d| d.parse::<LevelFilter>().ok())
        .next_back();
    match default {
        Some(l) if !names_ort && l > LevelFilter::WARN => format!("{filter},ort=warn"),
        _ => filter.to_string(),
    }
}

fn init_logging(v: &Verbosity) {
    let filter = log_filter(v);
    let env_filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("warning: log filter {filter:?} is not valid ({e}); using `warn`");
        tracing_subscriber::EnvFilter::new("warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn setup(common: &Common) -> Result<()> {
    if let Some(p) = &common.ort_library {
        distorch_vision::runtime::set_library_path(p)?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
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
            let cuda = distorch_vision::runtime::gpu::provider_status();
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
    let r = distorch_vision::bench::run_micro(
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
    let row = |name: &str, f: &distorch_vision::bench::Figures| {
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
            "outputs_on_request": m.on_request_output_names(),
            "blocks": m.blocks.iter().map(|b| serde_json::json!({"name": b.kind, "bytes": b.bytes, "tensors": b.weights.len()})).collect::<Vec<_>>(),
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
            b.kind,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_verb_is_described_and_every_verb_has_an_example() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            if sub.get_about().is_none() {
                missing.push(format!("{}: no description", sub.get_name()));
            }
            let example = sub.get_after_help().map(|h| h.to_string());
            if !example.is_some_and(|h| h.contains("distorch-vision ")) {
                missing.push(format!("{}: no example", sub.get_name()));
            }
            for arg in sub.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !arg.is_hide_set() && !builtin && arg.get_help().is_none() {
                    missing.push(format!("{} {}: no help", sub.get_name(), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn onnx_runtime_is_capped_at_warn_unless_named() {
        assert_eq!(cap_ort("info"), "info,ort=warn");
        assert_eq!(
            cap_ort("warn,distorch_vision=debug"),
            "warn,distorch_vision=debug"
        );
        assert_eq!(cap_ort("debug,ort=info"), "debug,ort=info");
        assert_eq!(
            cap_ort("trace,ort::logging=trace"),
            "trace,ort::logging=trace"
        );
        assert_eq!(cap_ort("error"), "error");
        // `ortho` is another crate, not ONNX Runtime.
        assert_eq!(cap_ort("info,ortho=debug"), "info,ortho=debug,ort=warn");
    }
}
