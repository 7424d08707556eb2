//! A real registry (Debian's `docker-registry`) on a free loopback port, for pull tests.

use std::fs;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::tools::require_tool;

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
