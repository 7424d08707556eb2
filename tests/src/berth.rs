//! The `berth` binary under test, run against a data dir of its own, and what that data dir's
//! image store holds on disk.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::tools::{run_err, run_ok};

/// The workspace's top directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// A binary of the workspace, built by `cargo build` before the tests run (the test command in
/// the README does that). `BERTH_BIN_DIR` points elsewhere, e.g. at a release build.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("BERTH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            target.join("debug")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests",
        path.display()
    );
    path
}

/// Runs `cmd ... --output json`, which must succeed, and parses what it prints.
pub fn run_json(cmd: &mut Command) -> serde_json::Value {
    cmd.args(["--output", "json"]);
    let out = run_ok(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd:?} printed bad JSON ({e}): {out}"))
}

/// A `berth` with its own data dir, removed when the test ends (also on failure).
#[derive(Debug)]
pub struct Berth {
    pub data_dir: TempDir,
}

impl Default for Berth {
    fn default() -> Self {
        Self::new()
    }
}

impl Berth {
    pub fn new() -> Self {
        Self {
            data_dir: tempfile::Builder::new()
                .prefix("berth-test-data-")
                .tempdir()
                .expect("create a temp data dir"),
        }
    }

    /// Like [`Self::new`] with the data dir under `parent`: `/dev/shm` for a test whose
    /// large image would be slow to unpack and remove on this machine's disk.
    pub fn new_in(parent: &Path) -> Self {
        Self {
            data_dir: tempfile::Builder::new()
                .prefix("berth-test-data-")
                .tempdir_in(parent)
                .unwrap_or_else(|e| panic!("create a temp data dir in {}: {e}", parent.display())),
        }
    }

    /// `berth --data-dir DIR ARGS...`, not yet run.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(binary("berth"));
        cmd.arg("--data-dir").arg(self.data_dir.path()).args(args);
        cmd
    }

    /// `berth image import SOURCE`, not yet run.
    pub fn import_cmd(&self, source: &Path) -> Command {
        let mut cmd = self.cmd(["image", "import"]);
        cmd.arg(source);
        cmd
    }

    /// `berth image build --from-dir DIR`, not yet run.
    pub fn build_cmd(&self, dir: &Path) -> Command {
        let mut cmd = self.cmd(["image", "build", "--from-dir"]);
        cmd.arg(dir);
        cmd
    }

    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_ok(&mut self.cmd(args))
    }

    pub fn err<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_err(&mut self.cmd(args))
    }

    /// The exit code of `berth ARGS...` (stdin from /dev/null).
    pub fn code<I, S>(&self, args: I) -> i32
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .cmd(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run berth");
        out.status.code().unwrap_or(-1)
    }

    /// `berth ARGS... --output json`, parsed.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_json(&mut self.cmd(args))
    }

    /// The names `berth image ls` lists, in its order.
    pub fn image_names(&self) -> Vec<String> {
        self.json(["image", "ls"])
            .as_array()
            .expect("image ls prints an array")
            .iter()
            .map(|row| row["name"].as_str().expect("a name").to_string())
            .collect()
    }

    /// Where the store keeps the blob `sha256:HEX`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.data_dir
            .path()
            .join("images/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Every blob in the store, as `sha256:HEX`.
    pub fn stored_blobs(&self) -> BTreeSet<String> {
        dir_entries(&self.data_dir.path().join("images/blobs/sha256"))
            .iter()
            .map(|path| format!("sha256:{}", path.file_name().unwrap().to_string_lossy()))
            .collect()
    }

    /// Every file left in the data dir's temp dir.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        dir_entries(&self.data_dir.path().join("tmp"))
    }
}

/// The paths in `dir`; none when it does not exist (yet).
fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("read dir entry").path()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}
