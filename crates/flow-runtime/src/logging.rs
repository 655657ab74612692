//! The top-level `logging { level = "info", format = "logfmt" }` block, as Alloy has it, and a
//! reloadable `tracing` subscriber that applies it (levels `debug`, `info`, `warn`, `error`;
//! formats `logfmt` and `json`).

use river_parser::ast::Block;
use river_parser::eval::{eval_body, Scope};
use river_parser::{Diagnostic, Diagnostics};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The decoded `logging` block.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LoggingConfig {
    #[serde(default = "default_level")]
    pub level: LogLevel,
    #[serde(default = "default_format")]
    pub format: LogFormat,
}

fn default_level() -> LogLevel {
    LogLevel::Info
}
fn default_format() -> LogFormat {
    LogFormat::Logfmt
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: LogLevel::Info,
            format: LogFormat::Logfmt,
        }
    }
}

impl LoggingConfig {
    /// Evaluates and decodes a `logging` block (only the standard library is in scope).
    pub fn from_block(block: &Block) -> Result<Self, Diagnostics> {
        let body = eval_body(&block.body, &Scope::new())?;
        river_parser::decode::decode_body_at(&body, block.name_span()).map_err(|d| {
            if d.is_empty() {
                Diagnostic::new(block.name_span(), "invalid logging block").into()
            } else {
                d
            }
        })
    }
}

type FilteredRegistry =
    tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type BoxedLayer = Box<dyn Layer<FilteredRegistry> + Send + Sync>;

fn make_filter(cfg: &LoggingConfig) -> EnvFilter {
    // RUST_LOG, when set, refines the level from the file (useful when debugging one module).
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(cfg.level.as_str()))
}

fn make_layer(cfg: &LoggingConfig) -> BoxedLayer {
    match cfg.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Logfmt => tracing_subscriber::fmt::layer()
            .event_format(Logfmt)
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

/// Installs the global subscriber with `initial` and returns a hook that swaps level and format
/// when a (re)loaded file has a `logging` block. (The filter and the formatting layer are
/// reloaded separately: tracing-subscriber cannot reload a per-layer filter.)
pub fn init(initial: &LoggingConfig) -> crate::runtime::LoggingHook {
    let (filter, filter_handle) = reload::Layer::new(make_filter(initial));
    let (layer, layer_handle) = reload::Layer::new(make_layer(initial));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
    let current = std::sync::Mutex::new(initial.clone());
    Arc::new(move |cfg: &LoggingConfig| {
        let mut cur = crate::util::lock(&current);
        if *cur == *cfg {
            return Ok(());
        }
        if cur.level != cfg.level {
            filter_handle
                .reload(make_filter(cfg))
                .map_err(|e| format!("applying logging level: {e}"))?;
        }
        if cur.format != cfg.format {
            layer_handle
                .reload(make_layer(cfg))
                .map_err(|e| format!("applying logging format: {e}"))?;
        }
        *cur = cfg.clone();
        Ok(())
    })
}

/// `ts=... level=info msg="..." key=value component_id=...` lines.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let ts = humantime_now();
        write!(
            writer,
            "ts={ts} level={} target={}",
            meta.level().as_str().to_lowercase(),
            meta.target()
        )?;
        let mut visitor = LogfmtVisitor::default();
        event.record(&mut visitor);
        if let Some(msg) = &visitor.message {
            write!(writer, " msg={}", quote(msg))?;
        }
        writer.write_str(&visitor.fields)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    if !fields.is_empty() {
                        // Span fields are formatted by the default field formatter as
                        // `key=value key2=value2`, which is already logfmt-like.
                        write!(writer, " {fields}")?;
                    }
                }
            }
        }
        writeln!(writer)
    }
}

#[derive(Default)]
struct LogfmtVisitor {
    message: Option<String>,
    fields: String,
}

impl tracing::field::Visit for LogfmtVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), quote(value));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), quote(&text));
        }
    }
}

/// A logfmt value: bare when it is non-empty and has no space, `"`, `=` or control character,
/// otherwise in double quotes with `"`, `\\` and newline escaped (other characters as they are).
/// This is logfmt quoting, deliberately not Go's `strconv.Quote` (`river_parser::quote::go_quote`),
/// which always quotes and escapes every non-printable character: plain values stay bare, as
/// logfmt readers expect.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control())
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// RFC 3339 UTC timestamp with milliseconds, without pulling in a time crate.
fn humantime_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now)
}

/// Formats a duration since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn rfc3339(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_millis(1_709_251_199_123)),
            "2024-02-29T23:59:59.123Z"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
}
