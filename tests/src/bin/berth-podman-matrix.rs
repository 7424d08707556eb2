//! berth-podman-matrix: runs the podman row matrix (berth_tests::podman_matrix) with one OCI
//! runtime and podman's default settings, and prints the rows as JSON; with `--placement`,
//! only the rows about where the runtime put a container under systemd. The systemd guest's
//! test runs it there with crun, runc and berth-runtime, and compares on the host.
//!
//!   usage: berth-podman-matrix [--placement] RUNTIME OCI-ARCHIVE

use std::path::PathBuf;

use berth_tests::podman_matrix::{Podman, Setup, matrix, placement, to_json};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let only_placement = args.first().is_some_and(|a| a == "--placement");
    if only_placement {
        args.remove(0);
    }
    let [runtime, archive] = &args[..] else {
        eprintln!("usage: berth-podman-matrix [--placement] RUNTIME OCI-ARCHIVE");
        std::process::exit(2);
    };
    let podman = Podman::new(PathBuf::from(runtime), archive.as_ref(), Setup::defaults());
    let rows = if only_placement {
        placement(&podman)
    } else {
        matrix(&podman)
    };
    drop(podman);
    println!("{}", to_json(&rows));
}
