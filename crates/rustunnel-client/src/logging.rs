//! Log output of the binaries on stderr: human-readable lines (the default) or, for log
//! pipelines, one JSON object per line (`timestamp`, `level`, `target`, `message` and the
//! event's fields, such as `tunnel`, `owner`, `peer`, `session`). The level filter can be
//! replaced while running (SIGHUP); the format is fixed at start.
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The subscriber under the output layer: the registry behind the replaceable filter.
type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text lines, coloured at a terminal.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// Environment variable whose filter directives (`debug`, `rustunnel_server=debug,info`) win
/// over any configured level.
pub const FILTER_ENV: &str = "RUSTUNNEL_LOG";

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log level '{0}': expected error, warn, info, debug, trace or filter directives")]
    Level(String),
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

/// Checks filter directives (`info`, `rustunnel_server=debug,warn`).
pub fn parse_level(directives: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(directives).map_err(|_| LoggingError::Level(directives.to_string()))
}

/// Replaces the level filter of the running logger.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// [`FILTER_ENV`] was set: it keeps precedence over configured levels.
    env_override: bool,
}

impl LogControl {
    /// Applies `directives` unless [`FILTER_ENV`] overrides them; says whether it applied.
    pub fn set_level(&self, directives: &str) -> Result<bool, LoggingError> {
        let filter = parse_level(directives)?;
        if self.env_override {
            return Ok(false);
        }
        self.handle.reload(filter).map_err(|e| LoggingError::Reload(e.to_string()))?;
        Ok(true)
    }
}

/// Installs the global logger: `level` unless [`FILTER_ENV`] is set. Colours only for a person
/// at a terminal: log files and journals get plain text.
pub fn init(format: LogFormat, level: &str) -> Result<LogControl, LoggingError> {
    let from_env = std::env::var(FILTER_ENV).ok().and_then(|v| EnvFilter::try_new(v).ok());
    let env_override = from_env.is_some();
    let filter = match from_env {
        Some(f) => f,
        None => parse_level(level)?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let output: Box<dyn Layer<Filtered> + Send + Sync> = match format {
        LogFormat::Human => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // A logger already installed (a test harness) stays; reloading then does nothing visible.
    let _ = Registry::default().with(filter).with(output).try_init();
    Ok(LogControl { handle, env_override })
}
