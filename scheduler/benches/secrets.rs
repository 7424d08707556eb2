//! Secrets envelope throughput: `cargo bench -p berth-scheduler --bench secrets`.
//!
//! Seals, opens and re-wraps 1 KiB and 1 MiB values with AES-256-GCM (a fresh data key per
//! seal, the data key wrapped by a KEK) and prints the median rate over several rounds. Every
//! open is checked against the value, so a broken build cannot report a fast figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_scheduler::secrets::{SecretsKey, open, rewrap, seal};

const ROUNDS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median time of one call of `f`, over ROUNDS rounds of `iters` calls.
fn time(iters: u32, mut f: impl FnMut()) -> Duration {
    let rounds = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    median(rounds)
}

#[allow(clippy::cast_precision_loss, reason = "a rate in a report")]
fn report(what: &str, size: usize, per_op: Duration) {
    let secs = per_op.as_secs_f64();
    println!(
        "{what:<7} {:>8} B  {:>9.1} µs/op  {:>10.0} ops/s  {:>8.1} MiB/s",
        size,
        secs * 1e6,
        1.0 / secs,
        size as f64 / secs / f64::from(1u32 << 20),
    );
}

fn main() {
    let kek = SecretsKey::generate().expect("a random KEK");
    let next = SecretsKey::generate().expect("a random KEK");
    let keys = [kek.clone()];
    for (size, iters) in [(1usize << 10, 20_000u32), (1 << 20, 40)] {
        let value: Vec<u8> = (0..size).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let record = seal(&kek, "bench", 1, &value).expect("seal");
        let opened = open(&keys, &record, "bench", 1).expect("open");
        assert_eq!(opened.as_slice(), value, "open gave another value");
        report(
            "seal",
            size,
            time(iters, || {
                black_box(seal(&kek, "bench", 1, black_box(&value)).expect("seal"));
            }),
        );
        report(
            "open",
            size,
            time(iters, || {
                let v = open(&keys, black_box(&record), "bench", 1).expect("open");
                assert_eq!(v.len(), size);
            }),
        );
        report(
            "rewrap",
            size,
            time(iters, || {
                black_box(rewrap(&keys, &next, black_box(&record)).expect("rewrap"));
            }),
        );
    }
}
