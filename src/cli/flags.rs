//! Library messages name a caller's options the library's way, `name` or `name=VALUE` between
//! backticks (Python's keyword arguments, the fields of `dv_load_options`, YAML keys); the
//! command line shows them as its flags (`--name`, `--name VALUE`).

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::str::FromStr;

use clap::builder::TypedValueParser;
use distorch_vision::Error;

/// Library option names whose flag is spelled otherwise (the rest: `--` and the name with `-`).
const RENAMED: &[(&str, &str)] = &[("comfyui_path", "comfyui")];

/// `message` with every option the library names written as the flag `cli` (or one of its
/// subcommands) has for it; other text in backticks (commands, file contents) is left as it is.
pub(crate) fn with_flags(cli: &clap::Command, message: &str) -> String {
    render(message, |id| long_flag(cli, id))
}

/// The value parser of a typed flag: the type's own `FromStr`, its message with flags.
pub(crate) fn typed<T>() -> Typed<T> {
    Typed(PhantomData)
}

#[derive(Clone)]
pub(crate) struct Typed<T>(PhantomData<fn() -> T>);

impl<T: FromStr<Err = Error> + Clone + Send + Sync + 'static> TypedValueParser for Typed<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        // The flags of this command, owned: clap's own parser of a function does the rest
        // (the "invalid value ... for '--flag'" wording).
        let longs: Vec<(String, String)> = cmd
            .get_arguments()
            .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_string())))
            .collect();
        let parse = move |s: &str| {
            s.parse::<T>().map_err(|e: Error| {
                render(e.message(), |id| {
                    longs.iter().find(|(i, _)| i == id).map(|(_, l)| l.clone())
                })
            })
        };
        parse.parse_ref(cmd, arg, value)
    }
}

/// `message` with each `` `name` `` / `` `name=VALUE` `` whose flag `long_of` knows rewritten.
fn render(message: &str, long_of: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        let span = &rest[open + 1..open + 1 + len];
        out.push_str(&rest[..open]);
        match as_flag(span, &long_of) {
            Some(flag) => out.push_str(&flag),
            None => out.push_str(&rest[open..open + len + 2]),
        }
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    out
}

/// `name` → `--flag`, `name=VALUE` → `--flag VALUE`, when `name` is one of the CLI's options.
fn as_flag(span: &str, long_of: impl Fn(&str) -> Option<String>) -> Option<String> {
    let (name, value) = match span.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (span, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return None;
    }
    let id = RENAMED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, id)| *id);
    let long = long_of(id)?;
    Some(match value {
        Some(v) => format!("--{long} {v}"),
        None => format!("--{long}"),
    })
}

/// The long flag of the argument `id` anywhere in the command tree.
fn long_flag(cmd: &clap::Command, id: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_long())
        .map(str::to_string)
        .or_else(|| cmd.get_subcommands().find_map(|s| long_flag(s, id)))
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction, Command};

    /// A command tree like the CLI's: a global flag and a subcommand's.
    fn cli() -> Command {
        let flag = |id: &'static str, long: &'static str| Arg::new(id).long(long);
        Command::new("t")
            .arg(flag("comfyui", "comfyui").global(true))
            .arg(flag("extra_model_paths", "extra-model-paths").global(true))
            .subcommand(
                Command::new("encode")
                    .arg(flag("device", "device"))
                    .arg(flag("dtype", "dtype"))
                    .arg(flag("micro_batch", "micro-batch"))
                    .arg(flag("resume", "resume").action(ArgAction::SetTrue)),
            )
    }

    fn with_flags(message: &str) -> String {
        super::with_flags(&cli(), message)
    }

    #[test]
    fn options_the_library_names_become_flags() {
        assert_eq!(
            with_flags("pass `comfyui_path=PATH` (the folder), or give `extra_model_paths=FILE`"),
            "pass --comfyui PATH (the folder), or give --extra-model-paths FILE"
        );
        assert_eq!(
            with_flags(
                "use `device=cpu`, or `dtype=fp32`; `micro_batch` must be at least 1; `resume`"
            ),
            "use --device cpu, or --dtype fp32; --micro-batch must be at least 1; --resume"
        );
        // Anything else in backticks stays.
        for text in [
            "install it with `scripts/setup.sh --gpu`",
            "see `distorch-vision models`",
            "unknown field `batchsize`",
            "`comfyui:` with `base_path:`",
            "an option this CLI lacks: `shard_size`",
            "an unclosed ` quote",
        ] {
            assert_eq!(with_flags(text), text);
        }
    }
}
