//! Fixtures shared by the end-to-end tests: the binaries under test, per-test data dirs, tools
//! that must be installed, and a busybox root filesystem built from Debian's busybox-static.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

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

/// Fails the test loudly unless running as root (the README's test command runs as root).
pub fn require_root() {
    assert!(
        nix_is_root(),
        "this test needs root: run the test suite as root (see README)"
    );
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The path of an installed tool, or a loud failure naming the setup script.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run scripts/setup.sh (the README's test command does)");
}

/// Runs a command and returns its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"))
}

/// Runs a command that must succeed, returning stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail, returning stderr.
pub fn run_err(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
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

    /// `berth --data-dir DIR ARGS...`, not yet run.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(binary("berth"));
        cmd.arg("--data-dir").arg(self.data_dir.path()).args(args);
        cmd
    }

    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_ok(&mut self.cmd(args))
    }

    pub fn err<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_err(&mut self.cmd(args))
    }

    /// `berth ARGS... --output json`, parsed.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.cmd(args);
        cmd.args(["--output", "json"]);
        let out = run_ok(&mut cmd);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd:?} printed bad JSON ({e}): {out}"))
    }
}

/// Applets linked to busybox in the fixture root filesystem.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "true", "false", "sleep", "echo", "cat", "ls", "ps", "hostname", "id", "env", "mkdir",
    "rm", "mount", "umount", "uname", "pwd", "printf", "test", "wc", "head", "tail", "grep",
    "sed", "sync", "touch", "ln", "stat", "find", "nc", "wget", "httpd", "kill", "chmod",
];

/// Writes a minimal busybox root filesystem into `dir` (which must exist): Debian's static
/// busybox, applet symlinks, /etc/passwd and /etc/group, and the usual empty directories.
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing: run scripts/setup.sh (installs busybox-static)"
    );
    for sub in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var", "usr/bin"] {
        fs::create_dir_all(dir.join(sub)).expect("create rootfs dir");
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", dir.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write group");
    fs::write(dir.join("etc/hostname"), "busybox\n").expect("write hostname");
}

/// A real registry (Debian's `docker-registry`) on a free loopback port with its own storage,
/// killed when dropped.
#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:PORT`: the registry part of references to it.
    pub addr: std::net::SocketAddr,
    child: std::process::Child,
    _storage: TempDir,
}

impl Registry {
    /// A registry anyone may push to and pull from.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry that wants HTTP basic credentials from `htpasswd` (bcrypt entries, as
    /// `htpasswd -Bbn USER PASSWORD` writes them) for every request.
    pub fn start_with_htpasswd(htpasswd: &Path) -> Self {
        Self::start_with(Some(htpasswd))
    }

    fn start_with(htpasswd: Option<&Path>) -> Self {
        let tool = require_tool("docker-registry");
        let storage = tempfile::Builder::new()
            .prefix("berth-test-registry-")
            .tempdir()
            .expect("create registry storage dir");
        let log_path = storage.path().join("registry.log");
        let mut last_failure = String::new();
        // The free port is found by binding and releasing it, so another process may take it
        // before the registry binds: then the registry exits and a new port is tried.
        for _attempt in 0..5 {
            let addr = free_loopback_addr();
            let config = storage.path().join("config.yml");
            let yaml = registry_config(addr, &storage.path().join("data"), htpasswd);
            fs::write(&config, yaml).expect("write registry config");
            let log = fs::File::create(&log_path).expect("create registry log");
            let mut child = Command::new(&tool)
                .arg("serve")
                .arg(&config)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().expect("dup registry log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", tool.display()));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().expect("poll registry process") {
                    last_failure = format!(
                        "exited with {status}: {}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                // 200 or 401 (with auth): either way the API is up.
                if matches!(http_status(addr, "/v2/"), Some(200 | 401)) {
                    return Self {
                        addr,
                        child,
                        _storage: storage,
                    };
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry on {addr} did not answer GET /v2/ within 30 s: {}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        panic!("docker-registry would not start: {last_failure}");
    }

    /// `127.0.0.1:PORT`, as image references name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_config(addr: std::net::SocketAddr, data: &Path, htpasswd: Option<&Path>) -> String {
    let mut config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: \"{}\"\n  \
         delete:\n    enabled: true\nhttp:\n  addr: \"{addr}\"\n",
        data.display()
    );
    if let Some(htpasswd) = htpasswd {
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: \"{}\"\n",
            htpasswd.display()
        ));
    }
    config
}

/// A loopback address with a port nobody was listening on a moment ago.
pub fn free_loopback_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
}

/// The status code of `GET path` on `addr` over plain HTTP/1.1, or None if nothing answers.
pub fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        match stream.read(&mut head[filled..]).ok()? {
            0 => return None,
            n => filled += n,
        }
    }
    // "HTTP/1.1 200 ..."
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Builds a busybox image named `tag` in `berth`'s store (from `busybox_rootfs`, with
/// `berth image build`): cmd `/bin/sh`, a PATH env, workdir `/`. Returns its manifest digest.
pub fn busybox_image(berth: &Berth, tag: &str) -> String {
    let rootfs = tempfile::Builder::new()
        .prefix("berth-busybox-rootfs-")
        .tempdir()
        .expect("create a temp rootfs dir");
    busybox_rootfs(rootfs.path());
    let built = berth.json([
        "image".as_ref(),
        "build".as_ref(),
        "--from-dir".as_ref(),
        rootfs.path().as_os_str(),
        "--tag".as_ref(),
        tag.as_ref(),
        "--cmd".as_ref(),
        "/bin/sh".as_ref(),
        "--env".as_ref(),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".as_ref(),
        "--workdir".as_ref(),
        "/".as_ref(),
    ] as [&std::ffi::OsStr; 12]);
    built["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("berth image build printed no digest: {built}"))
        .to_string()
}
