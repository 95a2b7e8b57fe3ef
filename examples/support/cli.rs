//! Command-line parsing shared by the example binaries: clap's derive, with an
//! unknown flag reported as such.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;

/// Parses the process arguments into `T`. `--help` prints the help and exits 0;
/// a bad flag prints what is wrong (an unknown flag named as such) with the
/// usage and exits 2.
pub(crate) fn parse<T: Parser>() -> T {
    match T::try_parse() {
        Ok(flags) => flags,
        Err(e) if e.kind() == ErrorKind::UnknownArgument => {
            let flag = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(flag)) => flag.clone(),
                _ => String::from("?"),
            };
            let usage = T::command().render_usage();
            eprintln!(
                "error: unknown flag `{flag}`\n\n{usage}\n\nFor more information, try '--help'."
            );
            std::process::exit(2)
        }
        Err(e) => e.exit(),
    }
}

/// Installs the log subscriber: `RUST_LOG` or `default` as the filter, one
/// line per event on stderr, colour only when stderr is a terminal.
pub(crate) fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .try_init();
}
