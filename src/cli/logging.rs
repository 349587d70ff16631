//! Logging setup: -v/-q, DISTORCH_LOG and RUST_LOG into one tracing filter.

use super::args::Verbosity;

/// The tracing filter: -v/-q, else DISTORCH_LOG, else RUST_LOG, else `warn,ort=error`; ONNX
/// Runtime's messages (target `ort`) capped at warn unless the filter names `ort`.
pub(crate) fn log_filter(v: &Verbosity) -> String {
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
pub(crate) fn cap_ort(filter: &str) -> String {
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

pub(crate) fn init_logging(v: &Verbosity) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
