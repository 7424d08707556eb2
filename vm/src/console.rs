//! The guest's serial console read line by line on a thread, each line stamped with when it
//! arrived and cleaned of the terminal control sequences the console puts before the guest's
//! first line.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Instant;

/// Lines from `source` as they arrive, with the instant each arrived; ends at EOF.
pub fn read_lines(
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
                    let text = strip_controls(&String::from_utf8_lossy(&buf));
                    if tx.send((Instant::now(), text)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// `line` without its line end, ANSI escape sequences (ESC [ ... final byte, or ESC and one
/// character) and carriage returns.
fn strip_controls(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters and intermediates, up to the final byte (@ to ~).
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_controls;

    #[test]
    fn terminal_resets_go() {
        assert_eq!(
            strip_controls("\u{1b}c\u{1b}[?7l\u{1b}[2Jhello\r\n"),
            "hello"
        );
        assert_eq!(strip_controls("plain"), "plain");
    }
}
