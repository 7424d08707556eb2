//! A Python venv with the packages of tests/python/requirements.txt (grpcio and friends, from
//! PyPI), for tests that drive berth from Python. Built once per requirements file and cached
//! under /var/cache/berth-tests, keyed by the file's hash, so a change of pins makes a new one.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::berth::workspace_root;
use crate::tools::run_ok;

/// Where the venvs are cached (`BERTH_TEST_CACHE` moves it).
fn cache_dir() -> PathBuf {
    std::env::var_os("BERTH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-tests"))
}

/// Debian's python3 (scripts/setup.sh installs it with python3-venv), or `BERTH_TEST_PYTHON`.
fn system_python() -> PathBuf {
    let python = std::env::var_os("BERTH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh (it installs python3 and python3-venv)",
        python.display()
    );
    python
}

/// The python of the cached venv for tests/python/requirements.txt, made first if need be.
pub fn python() -> PathBuf {
    let requirements = workspace_root().join("tests/python/requirements.txt");
    let text = std::fs::read(&requirements)
        .unwrap_or_else(|e| panic!("reading {}: {e}", requirements.display()));
    let key = hex::encode(&Sha256::digest(&text)[..8]);
    let cache = cache_dir();
    let venv = cache.join(format!("pyvenv-{key}"));
    if !venv.join(".complete").exists() {
        std::fs::create_dir_all(&cache)
            .unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
        build(&venv, &requirements);
    }
    venv.join("bin/python")
}

/// Builds the venv beside `venv` and renames it into place, so that tests running at the
/// same time never see a half-made one (the first rename wins; a loser's copy is dropped).
fn build(venv: &Path, requirements: &Path) {
    let partial = venv.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    let out = Command::new(system_python())
        .args(["-m", "venv"])
        .arg(&partial)
        .output()
        .expect("starting python3 -m venv");
    assert!(
        out.status.success(),
        "python3 -m venv failed (is python3-venv installed? run scripts/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(
        Command::new(partial.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("-r")
            .arg(requirements),
    );
    std::fs::write(partial.join(".complete"), b"").expect("marking the venv complete");
    // A venv finds its packages from the path of its python, so it survives the rename.
    if std::fs::rename(&partial, venv).is_err() {
        assert!(
            venv.join(".complete").exists(),
            "could not move {} to {}",
            partial.display(),
            venv.display()
        );
        let _ = std::fs::remove_dir_all(&partial);
    }
}

/// A Python client from tests/python (`script`, e.g. "events_client.py") ready to run in the
/// venv: `--proto-dir proto/proto --out DIR`, its stubs generated into DIR, a temp dir that
/// lives as long as the returned guard. The caller adds its own flags.
pub fn client(script: &str) -> (Command, tempfile::TempDir) {
    let stubs = tempfile::Builder::new()
        .prefix("berth-py-stubs-")
        .tempdir()
        .expect("temp dir");
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("tests/python").join(script))
        .arg("--proto-dir")
        .arg(workspace_root().join("proto/proto"))
        .arg("--out")
        .arg(stubs.path());
    (cmd, stubs)
}
