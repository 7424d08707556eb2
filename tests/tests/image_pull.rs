//! `berth image pull` against Debian's real docker-registry on loopback: OCI, docker schema 2
//! and multi-platform images pushed there by skopeo, basic and bearer authentication, and the
//! faults a pull must survive cleanly (unknown tags, corrupt blobs, no registry at all).

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use berth_tests::layout::{
    OCI_INDEX, image_index, named_entry, push_index_entry, put_blob, with_ref_name,
};
use berth_tests::{
    Berth, Registry, UmociImage, busybox_layout, output, require_tool, run_ok, skopeo_copy,
};
use serde_json::Value;
use tempfile::TempDir;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An OCI image layout holding busybox for linux/amd64 under `tag`, built with umoci.
struct Layout {
    _dir: TempDir,
    image: UmociImage,
}

impl Layout {
    fn busybox(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-oci-")
            .tempdir()
            .unwrap();
        let image = busybox_layout(dir.path(), tag);
        Self { _dir: dir, image }
    }

    fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.image.layout.display())
    }

    /// Adds an arm64 variant of `amd64_tag` and an index `index_tag` over both, listing arm64
    /// first so that a client taking the first entry gets it wrong.
    fn add_multi_platform_index(&self, amd64_tag: &str, index_tag: &str) {
        let layout = &self.image.layout;
        let amd64 = UmociImage {
            layout: layout.clone(),
            tag: amd64_tag.to_string(),
        };
        amd64.config(&["--tag", "arm64", "--architecture", "arm64"]);
        let entry = |tag: &str, architecture: &str| {
            let mut d = named_entry(layout, tag);
            d.as_object_mut().unwrap().remove("annotations");
            d["platform"] = serde_json::json!({"architecture": architecture, "os": "linux"});
            d
        };
        let index = image_index(vec![entry("arm64", "arm64"), entry(amd64_tag, "amd64")]);
        let descriptor = put_blob(layout, OCI_INDEX, &serde_json::to_vec(&index).unwrap());
        push_index_entry(layout, with_ref_name(descriptor, index_tag));
    }
}

/// `skopeo copy` to a plain-HTTP registry, with extra flags (`--format v2s2`, creds...).
fn push(source: &str, destination: &str, extra: &[&str]) {
    let flags = [&["--dest-tls-verify=false"], extra].concat();
    skopeo_copy(source, &format!("docker://{destination}"), &flags);
}

/// The manifest (or index) the registry holds for `reference`, as skopeo reads it.
fn registry_manifest(reference: &str, extra: &[&str]) -> Value {
    let out = run_ok(
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(extra)
            .arg(format!("docker://{reference}")),
    );
    serde_json::from_str(&out).unwrap()
}

/// The manifest digest the registry reports for `reference`.
fn registry_digest(reference: &str, extra: &[&str]) -> String {
    let out = run_ok(
        Command::new(require_tool("skopeo"))
            .args(["inspect", "--tls-verify=false"])
            .args(extra)
            .arg(format!("docker://{reference}")),
    );
    let parsed: Value = serde_json::from_str(&out).unwrap();
    parsed["Digest"].as_str().unwrap().to_string()
}

fn digests(descriptors: &Value) -> Vec<String> {
    descriptors
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A registry with busybox pushed under `tag` as OCI.
fn registry_with_busybox(tag: &str) -> (Registry, Layout) {
    let registry = Registry::start();
    let layout = Layout::busybox(tag);
    push(
        &layout.reference(tag),
        &format!("{}/busybox:{tag}", registry.host()),
        &[],
    );
    (registry, layout)
}

#[test]
fn pulls_an_oci_image_then_again_without_downloads_then_by_digest() {
    let (registry, _layout) = registry_with_busybox("1");
    let name = format!("{}/busybox:1", registry.host());
    let expected_digest = registry_digest(&name, &[]);
    let remote = registry_manifest(&name, &[]);
    let berth = Berth::new();

    let pulled = berth.json(["image", "pull", &name]);
    assert_eq!(pulled["name"], name.as_str());
    assert_eq!(pulled["digest"], expected_digest.as_str());
    assert_eq!(
        pulled["blobs_downloaded"], 2,
        "config and one layer: {pulled}"
    );

    let listed = berth.json(["image", "ls"]);
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["name"], name.as_str());
    assert_eq!(rows[0]["digest"], expected_digest.as_str());
    assert_eq!(rows[0]["layers"], 1);
    assert_eq!(rows[0]["architecture"], "amd64");

    let inspected = berth.json(["image", "inspect", &name]);
    assert_eq!(inspected["digest"], expected_digest.as_str());
    assert_eq!(
        inspected["manifest"]["config"]["digest"],
        remote["config"]["digest"]
    );
    assert_eq!(
        digests(&inspected["manifest"]["layers"]),
        digests(&remote["layers"])
    );
    assert_eq!(
        inspected["config"]["config"]["Cmd"],
        serde_json::json!(["/bin/sh"])
    );
    let layer = remote["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer_inode = fs::metadata(berth.blob_path(&layer)).unwrap().ino();

    // Again: the store has every blob, so nothing is downloaded or rewritten.
    let again = berth.json(["image", "pull", &name]);
    assert_eq!(again["digest"], expected_digest.as_str());
    assert_eq!(again["blobs_downloaded"], 0, "{again}");
    assert_eq!(again["blobs_present"], 2, "{again}");
    assert_eq!(
        fs::metadata(berth.blob_path(&layer)).unwrap().ino(),
        layer_inode
    );

    // By digest: named with the digest, same image.
    let by_digest = format!("{}/busybox@{expected_digest}", registry.host());
    let pulled = berth.json(["image", "pull", &by_digest]);
    assert_eq!(pulled["name"], by_digest.as_str());
    assert_eq!(pulled["digest"], expected_digest.as_str());
    let names = BTreeSet::from_iter(berth.image_names());
    assert_eq!(names, BTreeSet::from([name.clone(), by_digest.clone()]));

    // A digest the registry does not have is "not found", not some other failure.
    let missing = format!("{}/busybox@sha256:{}", registry.host(), "0".repeat(64));
    let err = berth.err(["image", "pull", &missing]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn pulls_a_docker_schema2_image() {
    let registry = Registry::start();
    let layout = Layout::busybox("1");
    let name = format!("{}/busybox:v2s2", registry.host());
    push(&layout.reference("1"), &name, &["--format", "v2s2"]);
    let remote = registry_manifest(&name, &[]);
    assert_eq!(
        remote["mediaType"], DOCKER_MANIFEST,
        "skopeo pushed {remote}"
    );
    let berth = Berth::new();

    berth.ok(["image", "pull", &name]);
    let inspected = berth.json(["image", "inspect", &name]);
    assert_eq!(inspected["digest"], registry_digest(&name, &[]).as_str());
    assert_eq!(inspected["manifest"]["mediaType"], DOCKER_MANIFEST);
    assert_eq!(
        inspected["manifest"]["layers"][0]["mediaType"],
        DOCKER_LAYER
    );
    assert_eq!(
        digests(&inspected["manifest"]["layers"]),
        digests(&remote["layers"])
    );
    assert_eq!(inspected["config"]["os"], "linux");
    // The manifest is stored byte for byte as the registry served it.
    let stored = fs::read(berth.blob_path(inspected["digest"].as_str().unwrap())).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), remote);
}

#[test]
fn picks_linux_amd64_out_of_a_multi_platform_index() {
    let registry = Registry::start();
    let layout = Layout::busybox("amd64");
    layout.add_multi_platform_index("amd64", "multi");
    let name = format!("{}/busybox:multi", registry.host());
    push(&layout.reference("multi"), &name, &["--multi-arch", "all"]);
    let index = registry_manifest(&name, &[]);
    assert_eq!(index["mediaType"], OCI_INDEX, "skopeo pushed {index}");
    let for_arch = |arch: &str| {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (amd64, arm64) = (for_arch("amd64"), for_arch("arm64"));
    assert_ne!(amd64, arm64);

    let berth = Berth::new();
    let pulled = berth.json(["image", "pull", &name]);
    assert_eq!(
        pulled["digest"],
        amd64.as_str(),
        "the default platform is linux/amd64"
    );
    let inspected = berth.json(["image", "inspect", &name]);
    assert_eq!(inspected["config"]["architecture"], "amd64");

    let other = Berth::new();
    let pulled = other.json(["image", "pull", &name, "--platform", "linux/arm64"]);
    assert_eq!(pulled["digest"], arm64.as_str());
    assert_eq!(
        other.json(["image", "inspect", &name])["config"]["architecture"],
        "arm64"
    );

    let err = other.err(["image", "pull", &name, "--platform", "linux/s390x"]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn basic_auth_registry_needs_the_right_credentials() {
    let secrets = TempDir::new().unwrap();
    let htpasswd = secrets.path().join("htpasswd");
    let entry = run_ok(Command::new(require_tool("htpasswd")).args(["-Bbn", "puller", "s3cret"]));
    fs::write(&htpasswd, entry).unwrap();
    let registry = Registry::start_with_htpasswd(&htpasswd);
    let layout = Layout::busybox("1");
    let name = format!("{}/busybox:1", registry.host());
    let creds = ["--creds", "puller:s3cret"];
    push(
        &layout.reference("1"),
        &name,
        &["--dest-creds", "puller:s3cret"],
    );
    let expected_digest = registry_digest(&name, &creds);
    let berth = Berth::new();

    let err = berth.err(["image", "pull", &name]);
    assert!(err.contains("requires a user name and password"), "{err}");
    assert!(err.contains(&registry.host()), "{err}");

    let wrong = berth
        .cmd(["image", "pull", &name])
        .env("BERTH_REGISTRY_USERNAME", "puller")
        .env("BERTH_REGISTRY_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("access denied (HTTP 401)"), "{err}");
    assert!(berth.json(["image", "ls"]).as_array().unwrap().is_empty());

    // Credentials from the environment.
    let out = run_ok(
        berth
            .cmd(["image", "pull", &name, "--output", "json"])
            .env("BERTH_REGISTRY_USERNAME", "puller")
            .env("BERTH_REGISTRY_PASSWORD", "s3cret"),
    );
    let pulled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pulled["digest"], expected_digest.as_str());

    // Credentials from flags and stdin, into a fresh store.
    let other = Berth::new();
    let mut child = other
        .cmd([
            "image",
            "pull",
            &name,
            "--username",
            "puller",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        other.json(["image", "inspect", &name])["digest"],
        expected_digest.as_str()
    );
}

#[test]
fn bearer_token_flow_gets_one_token_per_pull() {
    let (registry, _layout) = registry_with_busybox("1");
    let front = Front::start(
        registry.addr,
        FrontConfig {
            bearer: true,
            ..FrontConfig::default()
        },
    );
    let name = format!("{}/busybox:1", front.addr);
    let berth = Berth::new();

    let pulled = berth.json(["image", "pull", &name]);
    assert_eq!(
        pulled["digest"],
        registry_digest(&format!("{}/busybox:1", registry.host()), &[]).as_str()
    );
    assert_eq!(pulled["blobs_downloaded"], 2);
    let state = &front.state;
    // The manifest request met the challenge; the token then served it and both blobs.
    assert_eq!(state.token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(state.challenged.load(Ordering::SeqCst), 1);
    assert_eq!(state.blob_requests.load(Ordering::SeqCst), 2);
    let queries = state.token_queries.lock().unwrap().clone();
    assert!(queries[0].contains("service=berth-front"), "{queries:?}");
    assert!(
        queries[0].contains("scope=repository%3Abusybox%3Apull"),
        "{queries:?}"
    );
}

#[test]
fn blobs_redirected_to_storage_are_followed() {
    let (registry, _layout) = registry_with_busybox("1");
    let front = Front::start(
        registry.addr,
        FrontConfig {
            redirect_blobs: true,
            ..FrontConfig::default()
        },
    );
    let berth = Berth::new();
    let pulled = berth.json(["image", "pull", &format!("{}/busybox:1", front.addr)]);
    assert_eq!(pulled["blobs_downloaded"], 2, "{pulled}");
    // Both blobs were asked of the front, which only redirected: the bytes came from the
    // registry's own address.
    assert_eq!(front.state.blob_requests.load(Ordering::SeqCst), 2);
    let config = pulled["config"].as_str().unwrap();
    assert!(berth.blob_path(config).is_file());
}

#[test]
fn unknown_tag_is_not_found() {
    let (registry, _layout) = registry_with_busybox("1");
    let berth = Berth::new();
    let out = output(&mut berth.cmd([
        "image",
        "pull",
        &format!("{}/busybox:nope", registry.host()),
    ]));
    // The registry's MANIFEST_UNKNOWN keeps its kind up to the exit status: 5, not found.
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest nope not found"), "{err}");
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
    assert!(
        err.contains(&format!("from registry {}", registry.host())),
        "{err}"
    );
    let err = berth.err([
        "image",
        "pull",
        &format!("{}/nosuchrepo:1", registry.host()),
    ]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn corrupt_blob_is_refused_and_leaves_nothing_behind() {
    let (registry, _layout) = registry_with_busybox("1");
    let remote = registry_manifest(&format!("{}/busybox:1", registry.host()), &[]);
    let layer = remote["layers"][0]["digest"].as_str().unwrap().to_string();
    let front = Front::start(
        registry.addr,
        FrontConfig {
            corrupt_blob: Some(layer.clone()),
            ..FrontConfig::default()
        },
    );
    let name = format!("{}/busybox:1", front.addr);
    let berth = Berth::new();

    let err = berth.err(["image", "pull", &name]);
    assert!(
        err.contains(&format!("blob {layer} does not match its digest")),
        "{err}"
    );
    assert!(front.state.blob_requests.load(Ordering::SeqCst) >= 1);
    assert!(
        berth.json(["image", "ls"]).as_array().unwrap().is_empty(),
        "nothing is tagged"
    );
    let blobs = berth.stored_blobs();
    assert!(!blobs.contains(&layer), "{blobs:?}");
    assert!(
        blobs.len() <= 1,
        "at most the (verified) config may remain: {blobs:?}"
    );
    assert_eq!(
        berth.temp_files(),
        Vec::<PathBuf>::new(),
        "no partial files"
    );
}

#[test]
fn unreachable_registry_is_a_clear_error() {
    let addr = berth_tests::free_loopback_addr();
    let berth = Berth::new();
    let err = berth.err(["image", "pull", &format!("{addr}/busybox:1")]);
    assert!(
        err.contains(&format!(
            "request to http://{addr}/v2/busybox/manifests/1 failed"
        )),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
}

/// The token the front issues and expects.
const TOKEN: &str = "berth-test-token";

/// A small HTTP front on loopback before a real registry: it can demand bearer tokens (issued
/// by its own realm endpoint, `/token`) and corrupt one blob, and it counts what it serves.
/// Every byte of manifests and blobs still comes from the registry behind it.
struct Front {
    addr: SocketAddr,
    state: Arc<FrontState>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the front does besides forwarding.
#[derive(Default)]
struct FrontConfig {
    /// Demand `Authorization: Bearer TOKEN`, answering 401 with a challenge otherwise.
    bearer: bool,
    /// Flip a byte of this blob's content.
    corrupt_blob: Option<String>,
    /// Answer blob requests with a redirect to the registry itself, as registries that keep
    /// blobs in object storage do.
    redirect_blobs: bool,
}

struct FrontState {
    upstream: SocketAddr,
    config: FrontConfig,
    token_requests: AtomicUsize,
    token_queries: Mutex<Vec<String>>,
    challenged: AtomicUsize,
    blob_requests: AtomicUsize,
}

impl Front {
    fn start(upstream: SocketAddr, config: FrontConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FrontState {
            upstream,
            config,
            token_requests: AtomicUsize::new(0),
            token_queries: Mutex::default(),
            challenged: AtomicUsize::new(0),
            blob_requests: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || serve(stream, addr, &state));
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Answers one request (every response closes the connection, which HTTP/1.1 clients handle).
fn serve(stream: TcpStream, own_addr: SocketAddr, state: &FrontState) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line
            .trim_end()
            .split_once(':')
            .unwrap_or((line.trim_end(), ""));
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_string(),
    );
    let mut client = stream;

    if let Some(query) = path.strip_prefix("/token?") {
        state.token_requests.fetch_add(1, Ordering::SeqCst);
        state.token_queries.lock().unwrap().push(query.to_string());
        // `access_token` only: the OAuth2 spelling some token servers use instead of `token`.
        let body = format!(r#"{{"access_token":"{TOKEN}","expires_in":300}}"#);
        respond(
            &mut client,
            "200 OK",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        return;
    }
    let authorized = headers
        .iter()
        .any(|(n, v)| n == "authorization" && v == &format!("Bearer {TOKEN}"));
    if state.config.bearer && !authorized {
        state.challenged.fetch_add(1, Ordering::SeqCst);
        let repository = path
            .strip_prefix("/v2/")
            .and_then(|p| p.split("/manifests/").next())
            .and_then(|p| p.split("/blobs/").next())
            .unwrap_or("");
        let challenge = format!(
            r#"Bearer realm="http://{own_addr}/token",service="berth-front",scope="repository:{repository}:pull""#
        );
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        respond(
            &mut client,
            "401 Unauthorized",
            &[
                ("Content-Type", "application/json"),
                ("WWW-Authenticate", &challenge),
            ],
            body,
        );
        return;
    }

    let is_blob = path.contains("/blobs/");
    if is_blob {
        state.blob_requests.fetch_add(1, Ordering::SeqCst);
    }
    let upstream_addr = state.upstream;
    if is_blob && state.config.redirect_blobs {
        let location = format!("http://{upstream_addr}{path}");
        respond(
            &mut client,
            "307 Temporary Redirect",
            &[("Location", &location)],
            b"",
        );
        return;
    }
    let mut upstream = TcpStream::connect(upstream_addr).unwrap();
    let mut forwarded = format!("{method} {path} HTTP/1.1\r\nHost: {upstream_addr}\r\n");
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "connection" | "authorization") {
            forwarded.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes()).unwrap();
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).unwrap();
    let corrupt = state
        .config
        .corrupt_blob
        .as_ref()
        .is_some_and(|digest| is_blob && path.ends_with(digest.as_str()));
    if corrupt && response.starts_with(b"HTTP/1.1 200") {
        // Same length, one byte changed: only the digest check can notice.
        let last = response.len() - 1;
        response[last] ^= 0xff;
    }
    let _ = client.write_all(&response);
}

fn respond(client: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = client.write_all(head.as_bytes());
    let _ = client.write_all(body);
}
