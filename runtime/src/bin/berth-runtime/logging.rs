//! Log records in runc's shapes: text lines, or JSON lines with `level`, `msg` and `time`
//! (the keys conmon and podman read back), to `--log` or stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;

/// Where and how records go.
#[derive(Debug, Clone)]
pub struct Logger {
    file: Option<PathBuf>,
    json: bool,
}

impl Logger {
    /// Installs the logger for library records (warnings, and debug with `--debug`).
    pub fn new(file: Option<&Path>, json: bool, debug: bool) -> Self {
        let logger = Logger {
            file: file.map(Path::to_path_buf),
            json,
        };
        let level = if debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::WARN
        };
        let layer = RecordLayer {
            logger: Mutex::new(logger.clone()),
            level,
        };
        // The filter makes disabled records cost a level comparison at the call site.
        let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(layer.with_filter(filter)),
        );
        logger
    }

    /// Writes one record; errors also go to stderr when the log is a file, since callers
    /// that do not read the log still need the reason.
    pub fn write(&self, level: &str, msg: &str) {
        let time = berth_runtime::state::rfc3339_now();
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level={level} msg={msg:?}")
        };
        match &self.file {
            Some(path) => {
                if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                    let _ = writeln!(f, "{line}");
                }
            }
            None if level != "error" => eprintln!("{line}"),
            None => {}
        }
    }

    /// The one error line: plain on stderr, and a record in the log file.
    pub fn error(&self, msg: &str) {
        if self.file.is_some() {
            self.write("error", msg);
        }
        eprintln!("berth-runtime: {msg}");
    }
}

struct RecordLayer {
    logger: Mutex<Logger>,
    level: tracing::Level,
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecordLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        // libcgroups reports controllers this host lacks as warnings on every call: noise
        // unless debugging.
        if *meta.level() > self.level
            || (meta.target().starts_with("libcgroups") && self.level != tracing::Level::DEBUG)
        {
            return;
        }
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let level = meta.level().as_str().to_ascii_lowercase();
        if let Ok(logger) = self.logger.lock() {
            logger.write(&level, &visitor.0);
        }
    }
}
