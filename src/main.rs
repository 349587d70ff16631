//! The `distorch-vision` command line: parses, calls the library, prints.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use distorch_vision::job::interrupt;
use distorch_vision::Result;

use cli::args::{Cli, Command};
use cli::cmd::{
    cmd_bench, cmd_clean, cmd_devices, cmd_encode, cmd_export, cmd_inspect, cmd_models, cmd_plan,
    cmd_preprocess, cmd_run,
};
use cli::flags::with_flags;
use cli::logging::init_logging;

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
    // Library messages name options the library's way; show them as flags, except in YAML
    // runs, whose keys are those names.
    let flags = !matches!(cli.command, Command::Run { .. });
    let shown = |m: &str| {
        if flags {
            with_flags(&Cli::command(), m)
        } else {
            m.to_string()
        }
    };
    // Encodes stop cleanly on Ctrl-C / SIGTERM (see job::interrupt).
    interrupt::enable(Box::new(move |m: &str| {
        if flags {
            with_flags(&Cli::command(), m)
        } else {
            m.to_string()
        }
    }));
    let result = run(cli);
    // Every model was dropped with `run`; release the environment (joining ONNX Runtime's
    // thread pool) before exit handlers free what its threads still read.
    distorch_vision::runtime::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if interrupt::requested() => {
            let message = shown(e.message());
            if json {
                print_json_error("interrupted", &message);
            }
            eprintln!("{message}");
            ExitCode::from(130)
        }
        Err(e) => {
            let message = shown(e.message());
            if json {
                print_json_error(e.kind().as_str(), &message);
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Under `--json` an error is also one object on stdout, so a script reads one thing.
fn print_json_error(kind: &str, message: &str) {
    let v = serde_json::json!({"error": {"kind": kind, "message": message}});
    println!("{v}");
}

/// One verb, one function.
fn run(cli: Cli) -> Result<()> {
    let folders = cli.folders.folders();
    // -q: errors only; progress and summaries on stderr are left out too.
    let quiet = cli.verbosity.quiet > 0;
    match cli.command {
        Command::Devices {
            json,
            simulate_devices,
            openvino_ep,
        } => cmd_devices(json, simulate_devices.as_deref(), openvino_ep.as_deref()),
        Command::Plan {
            model,
            loader,
            dtype,
            json,
        } => cmd_plan(&model, &loader, dtype, json, &folders),
        Command::Inspect { model, json } => cmd_inspect(&model, json, &folders),
        Command::Export {
            model,
            out,
            granularity,
            common,
        } => cmd_export(&model, out.as_deref(), granularity, &common, &folders),
        Command::Encode(args) => cmd_encode(args, folders, quiet),
        Command::Preprocess {
            model,
            images,
            crop,
            out,
            strict,
        } => cmd_preprocess(&model, &images, crop, &out, strict, &folders, quiet),
        Command::Run { file, json, common } => cmd_run(&file, json, &common, folders, quiet),
        Command::Models { json } => cmd_models(json, &folders, quiet),
        Command::Bench(args) => cmd_bench(args),
        Command::Clean {
            model,
            missing,
            all,
            graphs_dir,
            json,
        } => cmd_clean(
            model.as_deref(),
            missing,
            all,
            graphs_dir.as_deref(),
            json,
            &folders,
            quiet,
        ),
    }
}
