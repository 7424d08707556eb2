//! buildah drives berth-runtime unchanged (issue 19): `buildah bud --runtime berth-runtime`
//! builds a Containerfile from a Debian base (apt through the host network, COPY, USER, a RUN
//! as that user) into the same file tree as runc builds, podman runs the result with
//! berth-runtime, and `buildah run` gives the same exit codes, stdin and terminal as with runc.
//! Each test has its own buildah storage, removed on drop.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_tests::tree_compare::{Node, scan};
use berth_tests::{
    PATH_ENV, binary, busybox_rootfs, debian_rootfs, require_root, require_tool, run_ok,
};
use sha2::{Digest, Sha256};

/// rlimits within the hard ones (root lacks CAP_SYS_RESOURCE here, see the README).
const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// The Containerfile of the issue: a package through apt, a COPY, a USER change and a RUN as
/// that user (benches/buildah.sh times the same file).
const CONTAINERFILE: &str = include_str!("fixtures/buildah/Containerfile");

/// Paths whose content or metadata records when or in which order they were made (logs,
/// caches keyed by inode), so two builds of the same recipe never agree on them.
/// (Two runc builds differ in exactly the logs and apt's binary caches.)
const VOLATILE: &[&str] = &["var/log/", "var/cache/apt/", "var/cache/ldconfig/aux-cache"];

/// buildah (and podman, which shares its storage) with a storage of its own.
struct Buildah {
    dir: tempfile::TempDir,
}

impl Buildah {
    fn new() -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("berth-buildah-")
            .tempdir()
            .expect("temp dir");
        Buildah { dir }
    }

    fn storage_args(&self, cmd: &mut Command) {
        let d = self.dir.path();
        cmd.arg("--root").arg(d.join("root"));
        cmd.arg("--runroot").arg(d.join("runroot"));
        cmd.args(["--storage-driver", "overlay"]);
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("600").arg(require_tool("buildah"));
        self.storage_args(&mut cmd);
        cmd.args(args);
        cmd.env("TMPDIR", self.tmp());
        cmd
    }

    fn tmp(&self) -> PathBuf {
        let tmp = self.dir.path().join("tmp");
        fs::create_dir_all(&tmp).expect("tmp dir");
        tmp
    }

    fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd(args).stdin(Stdio::null()))
            .trim()
            .to_string()
    }

    /// podman over the same storage, driving `runtime`.
    fn podman(&self, runtime: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg(require_tool("podman"));
        self.storage_args(&mut cmd);
        cmd.arg("--tmpdir").arg(self.tmp());
        cmd.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        cmd.arg("--runtime").arg(runtime);
        cmd.args(args);
        cmd
    }

    /// Commits the files of `rootfs` as image `tag`, with a PATH.
    fn image_from_dir(&self, rootfs: &Path, tag: &str) {
        let ctr = self.ok(&["from", "-q", "scratch"]);
        let mnt = self.ok(&["mount", &ctr]);
        run_ok(Command::new("cp").arg("-a").arg(rootfs.join(".")).arg(&mnt));
        self.ok(&["config", "--env", PATH_ENV, "--cmd", "/bin/sh", &ctr]);
        self.ok(&["commit", "-q", &ctr, tag]);
        self.ok(&["rm", &ctr]);
    }

    /// `buildah bud` of `context` with `runtime`, tagged `tag`.
    fn bud(&self, runtime: &Path, context: &Path, tag: &str) {
        let runtime = runtime.to_str().expect("utf-8 path");
        let context = context.to_str().expect("utf-8 path");
        let mut args = vec![
            "bud",
            "--pull=never",
            "--runtime",
            runtime,
            "--network",
            "host",
        ];
        args.extend_from_slice(ULIMITS);
        args.extend_from_slice(&["-t", tag, context]);
        self.ok(&args);
    }

    /// The file tree of image `tag` (mtimes aside, contents as digests), through a working
    /// container mounted for the scan.
    fn tree(&self, tag: &str) -> Tree {
        let ctr = self.ok(&["from", "-q", "--pull=never", tag]);
        let mnt = PathBuf::from(self.ok(&["mount", &ctr]));
        let tree = scan(&mnt)
            .into_iter()
            .filter(|(rel, _)| {
                let rel = rel.to_string_lossy();
                !VOLATILE.iter().any(|v| rel.starts_with(v))
            })
            .map(|(rel, mut node)| {
                node.mtime = 0;
                let digest = (node.kind == "file").then(|| {
                    let bytes = fs::read(mnt.join(&rel)).expect("read an image file");
                    format!("{:x}", Sha256::digest(bytes))
                });
                (rel, (node, digest))
            })
            .collect();
        self.ok(&["rm", &ctr]);
        tree
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "--all"]).output();
        let _ = self.cmd(&["rmi", "--all", "--force"]).output();
        // Unmounts the overlay layers so the temp dir can go.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("root/overlay"))
            .stderr(Stdio::null())
            .status();
    }
}

/// A file tree: what is compared about each path, and a file's content digest.
type Tree = BTreeMap<PathBuf, (Node, Option<String>)>;

/// The differences between the runc-built tree and berth-runtime's.
fn tree_diffs(runc: &Tree, berth: &Tree) -> Vec<String> {
    let mut diffs = Vec::new();
    for (rel, node) in runc {
        match berth.get(rel) {
            None => diffs.push(format!("only in runc's: {}", rel.display())),
            Some(other) if other != node => diffs.push(format!(
                "{}: runc's {node:?}, berth-runtime's {other:?}",
                rel.display()
            )),
            Some(_) => {}
        }
    }
    for rel in berth.keys().filter(|rel| !runc.contains_key(*rel)) {
        diffs.push(format!("only in berth-runtime's: {}", rel.display()));
    }
    diffs
}

#[test]
fn buildah_bud_with_berth_runtime_builds_what_runc_builds() {
    let b = Buildah::new();
    let runc = require_tool("runc");
    let berth = binary("berth-runtime");
    b.image_from_dir(&debian_rootfs(), "localhost/berth-buildah-base:latest");
    let context = b.dir.path().join("context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Containerfile"), CONTAINERFILE).unwrap();
    fs::write(context.join("greeting.txt"), "hello from the context\n").unwrap();

    b.bud(&runc, &context, "localhost/app:runc");
    b.bud(&berth, &context, "localhost/app:berth");

    let (runc_tree, berth_tree) = (b.tree("localhost/app:runc"), b.tree("localhost/app:berth"));
    assert!(
        berth_tree.contains_key(Path::new("usr/bin/hello")),
        "the apt-installed package is missing from berth-runtime's image"
    );
    let diffs = tree_diffs(&runc_tree, &berth_tree);
    assert!(
        diffs.is_empty(),
        "the images built with runc and berth-runtime differ:\n{}",
        diffs.join("\n")
    );

    // The image runs under podman with berth-runtime: the package answers, the RUN as the
    // user ran as that user, the COPY is there.
    let mut args = vec!["run", "--rm", "--pull=never", "--network", "none"];
    args.extend_from_slice(ULIMITS);
    args.extend_from_slice(&[
        "localhost/app:berth",
        "sh",
        "-c",
        "hello; id -u; cat /home/app/uid /home/app/hello.out /home/app/greeting.txt",
    ]);
    let out = run_ok(b.podman(&berth, &args).stdin(Stdio::null()));
    assert_eq!(
        out, "Hello, world!\n1000\n1000\nHello, world!\nhello from the context\n",
        "podman + berth-runtime running the image built by berth-runtime"
    );
}

/// `buildah run` rows (exit code, stdin, a terminal, a user) with one runtime: (output, code).
fn run_rows(b: &Buildah, ctr: &str, runtime: &Path) -> Vec<(String, i32)> {
    let rt = runtime.to_str().expect("utf-8 path");
    let rows: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["--", "sh", "-c", "echo out; exit 7"], None),
        (vec!["--", "sh", "-c", "wc -c; cat"], Some("")),
        (vec!["--", "cat"], Some("line one\nline two\n")),
        (vec!["--user", "65534", "--", "id"], None),
        (vec!["--", "sh", "-c", "kill -TERM $$"], None),
    ];
    let mut results = Vec::new();
    for (row, stdin) in rows {
        // buildah run has no --ulimit: it keeps the caller's limits.
        let mut args = vec!["run", "--runtime", rt, ctr];
        args.extend_from_slice(&row);
        let mut cmd = b.cmd(&args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("buildah run");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().expect("buildah run");
        results.push((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        ));
    }
    results.push(under_terminal(b, ctr, rt));
    results
}

/// `buildah run -t` under `script`, so there is a real terminal: the container sees a tty.
fn under_terminal(b: &Buildah, ctr: &str, runtime: &str) -> (String, i32) {
    let args = [
        "run",
        "-t",
        "--runtime",
        runtime,
        ctr,
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo tty:yes",
    ];
    let line: Vec<String> = ["timeout".to_string(), "--foreground".to_string()]
        .into_iter()
        .chain(b.cmd(&args).get_args().map(|a| {
            let s = a.to_string_lossy();
            format!("'{}'", s.replace('\'', "'\\''"))
        }))
        .collect();
    let mut cmd = Command::new(require_tool("script"));
    cmd.args(["-qec", &line.join(" "), "/dev/null"]);
    cmd.env("SHELL", "/bin/sh").env("TMPDIR", b.tmp());
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .output()
        .expect("script");
    // script's pty echoes the end of its (empty) input as ^@: that is script's, not the row's.
    let shown = String::from_utf8_lossy(&out.stdout)
        .replace('\r', "")
        .replace("^@", "");
    (shown, out.status.code().unwrap_or(-1))
}

#[test]
fn buildah_run_with_berth_runtime_matches_runc() {
    let b = Buildah::new();
    let rootfs = tempfile::Builder::new()
        .prefix("berth-buildah-busybox-")
        .tempdir()
        .expect("temp dir");
    busybox_rootfs(rootfs.path());
    b.image_from_dir(rootfs.path(), "localhost/berth-buildah-busybox:latest");
    let ctr = b.ok(&[
        "from",
        "-q",
        "--pull=never",
        "localhost/berth-buildah-busybox:latest",
    ]);

    let with_runc = run_rows(&b, &ctr, &require_tool("runc"));
    let with_berth = run_rows(&b, &ctr, &binary("berth-runtime"));
    assert_eq!(with_runc[0], ("out\n".to_string(), 7), "runc's exit row");
    assert_eq!(with_runc[5].0, "tty:yes\n", "runc's terminal row");
    for (i, (r, ours)) in with_runc.iter().zip(&with_berth).enumerate() {
        assert_eq!(ours, r, "buildah run row {i}: berth-runtime against runc");
    }
}
