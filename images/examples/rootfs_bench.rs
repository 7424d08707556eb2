//! Times `prepare_rootfs` of an already-unpacked image: `rootfs_bench DATA_DIR IMAGE [CYCLES]`
//! prints the median and p90 of prepare, and of prepare + remove, over CYCLES (default 200).

use std::time::{Duration, Instant};

use berth_images::Store;
use berth_images::progress::NoProgress;
use berth_images::snapshot::{prepare_rootfs, snapshots_dir};
use berth_images::unpack::{UnpackOptions, ensure_layers};

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "a rank among a few samples, rounded"
)]
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: rootfs_bench DATA_DIR IMAGE [CYCLES]");
        std::process::exit(2);
    }
    let cycles: usize = args.get(3).map(|c| c.parse()).transpose()?.unwrap_or(200);
    let store = Store::open(&args[1])?;
    let image = store.image(&args[2])?;
    ensure_layers(&store, &image, &UnpackOptions::default(), &NoProgress)?;
    let mut prepare = Vec::with_capacity(cycles);
    let mut cycle = Vec::with_capacity(cycles);
    for i in 0..cycles {
        let dir = snapshots_dir(&store).join(format!("bench-{}-{i}", std::process::id()));
        let start = Instant::now();
        let rootfs = prepare_rootfs(&store, &image, &dir, &NoProgress)?;
        prepare.push(start.elapsed());
        rootfs.remove()?;
        cycle.push(start.elapsed());
    }
    prepare.sort();
    cycle.sort();
    println!(
        "prepare_rootfs ({} layers, {cycles} cycles): median {:.3} ms, p90 {:.3} ms; prepare+remove median {:.3} ms",
        image.manifest.layers().len(),
        percentile(&prepare, 0.5).as_secs_f64() * 1e3,
        percentile(&prepare, 0.9).as_secs_f64() * 1e3,
        percentile(&cycle, 0.5).as_secs_f64() * 1e3,
    );
    Ok(())
}
