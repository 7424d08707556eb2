//! `berth image tag` and `berth image push` against Debian's real docker-registry on loopback:
//! a push pulled back elsewhere with the same digests and read by skopeo, a second push that
//! skips every blob, cross-repository mounts, a large layer sent in chunks, a push killed
//! mid-upload that leaves no manifest and succeeds when retried, basic auth, and a registry
//! that is not there.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_tests::{
    Berth, Registry, build_image, busybox_image, free_loopback_addr, http_status, poll_until,
    require_tool, run_err, run_ok,
};
use serde_json::Value;
use tempfile::TempDir;

/// Larger than berth's 8 MiB monolithic-upload threshold: random, so gzip cannot shrink it.
const LARGE: usize = 20 << 20;

/// What skopeo reads from the registry for `reference` (`Digest`, `Layers`...).
fn skopeo_inspect(reference: &str, extra: &[&str]) -> Value {
    let out = run_ok(
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--tls-verify=false"])
            .args(extra)
            .arg(format!("docker://{reference}")),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo printed bad JSON ({e}): {out}"))
}

fn layer_digests(berth: &Berth, image: &str) -> Vec<Value> {
    let inspected = berth.json(["image", "inspect", image]);
    inspected["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].clone())
        .collect()
}

/// The `outcome` of every blob in a push summary, config first.
fn outcomes(pushed: &Value) -> Vec<&str> {
    pushed["blobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no blobs in {pushed}"))
        .iter()
        .map(|b| b["outcome"].as_str().unwrap())
        .collect()
}

/// An image of one layer holding `LARGE` random bytes, named `name`; returns its digest.
fn large_image(berth: &Berth, name: &str) -> String {
    let dir = TempDir::new().unwrap();
    let mut data = Vec::with_capacity(LARGE);
    fs::File::open("/dev/urandom")
        .unwrap()
        .take(LARGE as u64)
        .read_to_end(&mut data)
        .unwrap();
    fs::write(dir.path().join("data.bin"), &data).unwrap();
    build_image(berth, dir.path(), name, "/data.bin")
}

#[test]
fn tag_names_the_same_manifest_and_refuses_a_missing_source() {
    let berth = Berth::new();
    let digest = busybox_image(&berth, "busybox:1");
    let tagged = berth.json(["image", "tag", "busybox:1", "127.0.0.1:5999/team/bb:2"]);
    assert_eq!(tagged["digest"], digest.as_str(), "{tagged}");
    assert_eq!(tagged["name"], "127.0.0.1:5999/team/bb:2");
    let inspected = berth.json(["image", "inspect", "127.0.0.1:5999/team/bb:2"]);
    assert_eq!(inspected["digest"], digest.as_str());
    let mut names = berth.image_names();
    names.sort();
    assert_eq!(names, ["127.0.0.1:5999/team/bb:2", "busybox:1"]);

    let err = berth.err(["image", "tag", "nope:3", "other:1"]);
    assert!(err.contains("\"nope:3\""), "{err}");
    let err = berth.err(["image", "tag", "busybox:1", &format!("x@{digest}")]);
    assert!(err.contains("holds a digest"), "{err}");
    assert_eq!(berth.image_names().len(), 2, "a refused tag adds no name");
}

#[test]
fn pushed_image_pulls_back_elsewhere_with_the_same_digests_and_a_second_push_skips_all() {
    let registry = Registry::start();
    let name = format!("{}/busybox:1", registry.host());
    let berth = Berth::new();
    let digest = busybox_image(&berth, &name);

    let pushed = berth.json(["image", "push", &name]);
    assert_eq!(pushed["digest"], digest.as_str(), "{pushed}");
    assert_eq!(outcomes(&pushed), ["uploaded", "uploaded"], "{pushed}");

    let remote = skopeo_inspect(&name, &[]);
    assert_eq!(remote["Digest"], digest.as_str(), "{remote}");
    assert_eq!(
        remote["Layers"].as_array().unwrap(),
        &layer_digests(&berth, &name)
    );

    let other = Berth::new();
    let pulled = other.json(["image", "pull", &name]);
    assert_eq!(pulled["digest"], digest.as_str(), "{pulled}");
    assert_eq!(pulled["blobs_downloaded"], 2, "{pulled}");

    let again = berth.json(["image", "push", &name]);
    assert_eq!(again["digest"], digest.as_str());
    assert_eq!(outcomes(&again), ["present", "present"], "{again}");
    assert_eq!(again["bytes_uploaded"], 0, "{again}");
}

#[test]
fn push_to_another_repository_of_the_registry_mounts_the_blobs() {
    let registry = Registry::start();
    let first = format!("{}/team/busybox:1", registry.host());
    let berth = Berth::new();
    let digest = busybox_image(&berth, &first);
    berth.ok(["image", "push", &first]);

    // Recorded by the push: the same store pushing elsewhere on the registry mounts.
    let second = format!("{}/team/copy:1", registry.host());
    let pushed = berth.json(["image", "push", &first, "--dest", &second]);
    assert_eq!(outcomes(&pushed), ["mounted", "mounted"], "{pushed}");
    assert_eq!(
        pushed["blobs"][1]["mounted_from"], "team/busybox",
        "{pushed}"
    );
    assert_eq!(pushed["bytes_uploaded"], 0, "{pushed}");
    assert_eq!(skopeo_inspect(&second, &[])["Digest"], digest.as_str());

    // Recorded by a pull: another store that pulled from one repository mounts into a third.
    let other = Berth::new();
    other.ok(["image", "pull", &second]);
    let third = format!("{}/mirror:1", registry.host());
    other.ok(["image", "tag", &second, &third]);
    let pushed = other.json(["image", "push", &third]);
    assert_eq!(outcomes(&pushed), ["mounted", "mounted"], "{pushed}");
    assert_eq!(pushed["blobs"][0]["mounted_from"], "team/copy", "{pushed}");
    assert_eq!(skopeo_inspect(&third, &[])["Digest"], digest.as_str());
}

#[test]
fn large_layer_goes_up_in_chunks_and_pulls_back_equal() {
    let registry = Registry::start();
    let name = format!("{}/big:1", registry.host());
    let shm = Path::new("/dev/shm");
    let berth = Berth::new_in(shm);
    let digest = large_image(&berth, &name);

    let pushed = berth.json(["image", "push", &name]);
    assert_eq!(pushed["digest"], digest.as_str());
    let layer = &pushed["blobs"][1];
    assert_eq!(layer["outcome"], "uploaded", "{pushed}");
    // 20 MiB of random data gzips to a little over 20 MiB: three PATCHes of at most 8 MiB.
    assert_eq!(layer["chunks"], 3, "{pushed}");
    assert_eq!(
        pushed["blobs"][0]["chunks"], 1,
        "the config goes up whole: {pushed}"
    );

    let other = Berth::new_in(shm);
    let pulled = other.json(["image", "pull", &name]);
    assert_eq!(pulled["digest"], digest.as_str(), "{pulled}");
    let layer_digest = layer["digest"].as_str().unwrap();
    assert_eq!(
        fs::read(other.blob_path(layer_digest)).unwrap(),
        fs::read(berth.blob_path(layer_digest)).unwrap()
    );
}

#[test]
fn push_to_a_closed_port_fails_naming_the_registry() {
    let addr = free_loopback_addr();
    let berth = Berth::new();
    let name = format!("{addr}/busybox:1");
    busybox_image(&berth, &name);
    let err = berth.err(["image", "push", &name]);
    assert!(
        err.contains(&format!("pushing busybox:1 to registry {addr}")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
}

#[test]
fn killed_push_leaves_no_manifest_and_a_retry_succeeds() {
    let registry = Registry::start();
    // Lets the first 8 MiB PATCH through and stalls in the second.
    let proxy = StallingProxy::start(registry.addr, 12 << 20);
    let shm = Path::new("/dev/shm");
    let berth = Berth::new_in(shm);
    let through_proxy = format!("{}/big:1", proxy.addr);
    let digest = large_image(&berth, &through_proxy);

    let mut child = berth
        .cmd(["image", "push", &through_proxy])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    poll_until(
        "the push to stall mid-upload",
        Duration::from_secs(60),
        || proxy.stalled().then_some(()),
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let direct = format!("{}/big:1", registry.host());
    assert_eq!(http_status(registry.addr, "/v2/big/manifests/1"), Some(404));
    let err = run_err(
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{direct}")),
    );
    assert!(err.contains("manifest unknown"), "{err}");

    let retried = berth.json(["image", "push", &through_proxy, "--dest", &direct]);
    assert_eq!(retried["digest"], digest.as_str());
    // The half-sent layer did not count: it goes up again (the tiny config most likely
    // finished before the kill, but that is a race this test does not rely on).
    let retried_outcomes = outcomes(&retried);
    assert_eq!(retried_outcomes[1], "uploaded", "{retried}");
    assert!(
        matches!(retried_outcomes[0], "present" | "uploaded"),
        "{retried}"
    );
    assert_eq!(skopeo_inspect(&direct, &[])["Digest"], digest.as_str());
}

#[test]
fn basic_auth_registry_takes_credentials_as_pull_does() {
    let secrets = TempDir::new().unwrap();
    let htpasswd = secrets.path().join("htpasswd");
    let entry = run_ok(Command::new(require_tool("htpasswd")).args(["-Bbn", "pusher", "s3cret"]));
    fs::write(&htpasswd, entry).unwrap();
    let registry = Registry::start_with_htpasswd(&htpasswd);
    let name = format!("{}/busybox:1", registry.host());
    let berth = Berth::new();
    let digest = busybox_image(&berth, &name);

    let err = berth.err(["image", "push", &name]);
    assert!(err.contains("requires a user name and password"), "{err}");

    let out = run_ok(
        berth
            .cmd(["image", "push", &name, "--output", "json"])
            .env("BERTH_REGISTRY_USERNAME", "pusher")
            .env("BERTH_REGISTRY_PASSWORD", "s3cret"),
    );
    assert!(!out.contains("s3cret"), "{out}");
    let pushed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pushed["digest"], digest.as_str());
    let remote = skopeo_inspect(&name, &["--creds", "pusher:s3cret"]);
    assert_eq!(remote["Digest"], digest.as_str());
}

/// A TCP proxy on loopback before a registry that forwards requests until `stall_after` bytes
/// have gone upstream in all, then stops reading from its clients: an upload hung mid-way,
/// with the registry holding a partial upload.
struct StallingProxy {
    addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
    stall_after: u64,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl StallingProxy {
    fn start(upstream: SocketAddr, stall_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let forwarded = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (forwarded, stop, streams) = (forwarded.clone(), stop.clone(), streams.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let Ok(server) = TcpStream::connect(upstream) else {
                                continue;
                            };
                            let mut held = streams.lock().unwrap();
                            held.push(client.try_clone().unwrap());
                            held.push(server.try_clone().unwrap());
                            let (f, s) = (forwarded.clone(), stop.clone());
                            let (c, u) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                            std::thread::spawn(move || forward_up(c, u, &f, stall_after, &s));
                            std::thread::spawn(move || {
                                let (mut from, mut to) = (server, client);
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(Shutdown::Write);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Self {
            addr,
            forwarded,
            stall_after,
            stop,
            streams,
            acceptor: Some(acceptor),
        }
    }

    fn stalled(&self) -> bool {
        self.forwarded.load(Ordering::SeqCst) >= self.stall_after
    }
}

/// Client to registry, counting, until the shared count reaches `stall_after`; then holds the
/// connection open without reading until the proxy stops.
fn forward_up(
    mut client: TcpStream,
    mut server: TcpStream,
    forwarded: &AtomicU64,
    stall_after: u64,
    stop: &AtomicBool,
) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        if forwarded.load(Ordering::SeqCst) >= stall_after {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        let n = match client.read(&mut buffer) {
            Ok(0) | Err(_) => {
                let _ = server.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        if server.write_all(&buffer[..n]).is_err() {
            return;
        }
        forwarded.fetch_add(n as u64, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
