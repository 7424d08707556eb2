//! Terminal progress bars for pulls and unpacks, drawn (on stderr) only when stdout is a
//! terminal, so `--output json` into a pipe or a log file stays clean.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use berth_images::progress::{NoProgress, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bars per item on a terminal; nothing otherwise.
pub(crate) fn for_terminal() -> Box<dyn Progress> {
    if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(NoProgress)
    }
}

#[derive(Debug)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for Bars {
    fn default() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::default(),
        }
    }
}

fn short(item: &str) -> String {
    let hex = item.strip_prefix("sha256:").unwrap_or(item);
    if hex.len() > 12 && item.starts_with("sha256:") {
        hex[..12].to_string()
    } else {
        item.to_string()
    }
}

impl Progress for Bars {
    fn started(&self, item: &str, total: Option<u64>) {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("static template is valid")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{prefix:>12} {spinner} {bytes} {bytes_per_sec}")
                    .expect("static template is valid"),
            ),
        };
        let bar = self.multi.add(bar.with_prefix(short(item)));
        self.bars
            .lock()
            .expect("progress lock")
            .insert(item.to_string(), bar);
    }

    fn advanced(&self, item: &str, bytes: u64) {
        if let Some(bar) = self.bars.lock().expect("progress lock").get(item) {
            bar.inc(bytes);
        }
    }

    fn finished(&self, item: &str) {
        if let Some(bar) = self.bars.lock().expect("progress lock").remove(item) {
            bar.finish();
        }
    }

    fn note(&self, message: &str) {
        let _ = self.multi.println(message);
    }
}
