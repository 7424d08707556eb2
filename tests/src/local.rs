//! A data dir with a busybox image for tests of local containers (`berth run`, `ps`,
//! `explain`), which stops and removes the containers it named on drop, also when a test
//! fails half-way.

use std::process::{Output, Stdio};

use crate::berth::Berth;
use crate::busybox::busybox_image;
use crate::tools::{output, require_root};

/// The tag of the busybox image every `LocalEnv` holds.
pub const LOCAL_IMAGE: &str = "busybox:latest";

/// A `Berth` data dir with `LOCAL_IMAGE`, and the names of the containers to remove.
#[derive(Debug)]
pub struct LocalEnv {
    pub berth: Berth,
    names: Vec<String>,
}

impl LocalEnv {
    pub fn new() -> Self {
        require_root();
        let berth = Berth::new();
        busybox_image(&berth, LOCAL_IMAGE);
        Self {
            berth,
            names: Vec::new(),
        }
    }

    /// A name unique to this test process, remembered for cleanup.
    pub fn name(&mut self, base: &str) -> String {
        let name = format!("{base}-{}", std::process::id());
        self.names.push(name.clone());
        name
    }

    /// `berth run ARGS` with no input.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.berth.cmd(["run"]);
        cmd.args(args).stdin(Stdio::null());
        output(&mut cmd)
    }

    /// `berth run ARGS`, which must succeed; its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "berth run {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `sleep 1000` detached under `name(base)`, with `extra` flags; returns the name.
    pub fn run_detached(&mut self, base: &str, extra: &[&str]) -> String {
        let name = self.name(base);
        let mut args = vec!["-d", "--name", &name];
        args.extend_from_slice(extra);
        args.extend([LOCAL_IMAGE, "sleep", "1000"]);
        self.run_ok(&args);
        name
    }
}

impl Default for LocalEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LocalEnv {
    fn drop(&mut self) {
        for name in &self.names {
            // busybox sleep as init ignores TERM: a short grace, then KILL.
            let _ = self.berth.cmd(["stop", "-t", "1", name]).output();
            let _ = self.berth.cmd(["rm", "-f", name]).output();
        }
    }
}
