//! Logging set-up for the companion services, and the pieces the gateway's richer set-up (access log,
//! background writer) shares with them: the output format and the `RUST_LOG` filter. Called once, first
//! thing in `main`, before anything logs.

use tracing_subscriber::EnvFilter;

/// One JSON object per line for log shippers, or text for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `RUST_LOG` when set and valid, otherwise `default` (for example `"info"`).
pub fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Logs to stderr (stdout stays free for the lines scripts read, such as the bound address), filtered by
/// `RUST_LOG` (default `info`). Colour codes only for a person at a terminal, never into files.
pub fn init(format: LogFormat) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter("info")).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already set up: {e}");
    }
}
