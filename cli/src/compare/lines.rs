//! A workload's output read line by line on a thread, each line stamped with when it arrived.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Instant;

use super::KERNEL_PREFIX;

/// Lines from `source` as they arrive, with the instant each arrived; ends at EOF.
pub(super) fn read_lines(
    source: impl std::io::Read + Send + 'static,
) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let text = text.trim_end_matches(['\r', '\n']);
                    // The serial console puts terminal resets before the guest's first line.
                    let line = match text.find(KERNEL_PREFIX) {
                        Some(i) => text[i..].to_string(),
                        None => text.to_string(),
                    };
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}
