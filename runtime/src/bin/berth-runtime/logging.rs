//! Log records in runc's shapes: text lines, or JSON lines with `level`, `msg` and `time`
//! (the keys conmon and podman read back), to `--log` or stderr.
//!
//! The subscriber is a few lines over `tracing` itself rather than tracing-subscriber's
//! registry: the library emits plain events (no spans), and for a command that lives a few
//! milliseconds the registry's span storage cost more time and resident memory than all of
//! the runtime's own work before the clone.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use berth_runtime::process::AMBIENT_LOG_TARGET;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, subscriber::Interest};

/// Where and how records go.
#[derive(Debug, Clone)]
pub(crate) struct Logger {
    /// `--log`, opened once for appending: init writes to it after pivot_root too, where the
    /// path would name a file in the container's root instead. Closed on exec (CLOEXEC).
    file: Option<Arc<File>>,
    json: bool,
}

impl Logger {
    /// Installs the logger for library records (warnings, and debug with `--debug`).
    pub(crate) fn new(file: Option<&Path>, json: bool, debug: bool) -> Self {
        let logger = Logger {
            file: file.and_then(|path| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .inspect_err(|e| {
                        eprintln!("berth-runtime: opening --log {}: {e}", path.display())
                    })
                    .ok()
                    .map(Arc::new)
            }),
            json,
        };
        let level = if debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::WARN
        };
        let _ = tracing::subscriber::set_global_default(RecordSubscriber {
            logger: logger.clone(),
            level,
            ambient_on_stderr: file.is_none() && !debug,
        });
        logger
    }

    /// Writes one record; errors also go to stderr when the log is a file, since callers
    /// that do not read the log still need the reason.
    pub(crate) fn write(&self, level: &str, msg: &str) {
        let time = berth_runtime::state::rfc3339_now();
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level={level} msg={msg:?}")
        };
        match &self.file {
            // One write per record: O_APPEND keeps lines whole between processes.
            Some(file) => {
                let _ = (&**file).write_all(format!("{line}\n").as_bytes());
            }
            None if level != "error" => eprintln!("{line}"),
            None => {}
        }
    }

    /// The one error line: plain on stderr, and a record in the log file.
    pub(crate) fn error(&self, msg: &str) {
        if self.file.is_some() {
            self.write("error", msg);
        }
        eprintln!("berth-runtime: {msg}");
    }
}

/// Writes each enabled event as one record; spans are accepted and ignored.
struct RecordSubscriber {
    logger: Logger,
    level: tracing::Level,
    /// Whether the records would reach stderr with no `--debug`: then warnings about ambient
    /// capabilities are left out. buildah runs the runtime without `--log`, with `-t` its
    /// stderr is the user's terminal, and its configs always list ambient capabilities the
    /// inheritable set lacks; runc 1.1 says nothing of them there. A log file keeps them.
    ambient_on_stderr: bool,
}

impl RecordSubscriber {
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        // libcgroups reports controllers this host lacks as warnings on every call: noise
        // unless debugging.
        *meta.level() <= self.level
            && (self.level == tracing::Level::DEBUG || !meta.target().starts_with("libcgroups"))
            && !(self.ambient_on_stderr && meta.target() == AMBIENT_LOG_TARGET)
    }
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

impl tracing::Subscriber for RecordSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Decided once per call site: a disabled record then costs a cached check.
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.level))
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.wants(meta)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        self.logger.write(&level, &visitor.0);
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}
