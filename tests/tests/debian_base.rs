//! scripts/debian-base.sh against a data dir of the test's own (the root filesystem comes from
//! the tests' shared cache, so the suite debootstraps once): it builds `debian:bookworm`, whose
//! curl fetches a page by a name that glibc resolves through NSS in a container, and a second
//! run is a cache hit that neither debootstraps nor rebuilds the image.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Stdio;
use std::thread;

use berth_tests::{Berth, DEBIAN_CACHE, binary, debian_base_cmd, output, require_root, run_ok};

const TAG: &str = "debian:bookworm";

/// Runs the script for `berth`'s data dir; its stdout.
fn debian_base(berth: &Berth) -> String {
    run_ok(
        debian_base_cmd(&[])
            .env("BERTH_DATA_DIR", berth.data_dir.path())
            .env("BERTH", binary("berth")),
    )
}

/// (inode, mtime in ns) of a path: a rebuild replaces both.
fn identity(path: &Path) -> (u64, i64) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.ino(), meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
}

/// Answers one HTTP request on a loopback port with `body`; returns the port.
fn serve_once(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).expect("write the reply");
    });
    port
}

#[test]
fn debian_base_builds_a_resolving_image_and_reuses_its_cache() {
    require_root();
    let berth = Berth::new();
    let first = debian_base(&berth);
    assert!(
        first.contains(&format!("== building image {TAG}")),
        "the first run into an empty data dir built no image:\n{first}"
    );
    let rootfs = Path::new(DEBIAN_CACHE).join("rootfs");
    let stamp = Path::new(DEBIAN_CACHE).join("stamp");
    let (tree, stamped) = (identity(&rootfs), identity(&stamp));
    assert!(berth.image_names().contains(&TAG.to_string()));
    let digest = berth.json(["image", "inspect", TAG])["digest"].clone();

    let second = debian_base(&berth);
    assert!(second.contains("cache hit"), "{second}");
    assert!(second.contains("already in"), "{second}");
    assert!(
        !second.contains("debootstrap") && !second.contains("building image"),
        "the second run rebuilt something:\n{second}"
    );
    assert_eq!(identity(&rootfs), tree, "the cached rootfs was replaced");
    assert_eq!(identity(&stamp), stamped, "the stamp was rewritten");
    assert_eq!(berth.json(["image", "inspect", TAG])["digest"], digest);

    // curl resolves through glibc (getaddrinfo, NSS "files"): a name only the container's
    // /etc/hosts knows reaches this test's loopback server. Busybox's static wget cannot.
    let port = serve_once("hello from the test\n");
    let script = format!(
        "echo '127.0.0.1 berth-probe' >> /etc/hosts && getent hosts berth-probe && \
         getent hosts localhost && curl -fsS --max-time 10 http://berth-probe:{port}/"
    );
    let out = output(
        berth
            .cmd([
                "run",
                "--rm",
                "--network",
                "host",
                TAG,
                "bash",
                "-c",
                &script,
            ])
            .stdin(Stdio::null()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "berth run: {out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["127.0.0.1", "berth-probe"]
    );
    assert!(
        lines[1]
            .split_whitespace()
            .skip(1)
            .any(|n| n == "localhost"),
        "{stdout}"
    );
    assert_eq!(lines[2], "hello from the test");
}

#[test]
fn debian_base_refuses_an_unknown_argument() {
    require_root();
    let out = output(&mut debian_base_cmd(&["--rootfs"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown argument '--rootfs'"), "{stderr}");
}

/// A cache that a crash left without its stamp is never taken for a complete one: the script
/// removes it and debootstraps again (here against a closed loopback port, so that fails at
/// once), and a failed build leaves no stamp and no rootfs behind.
#[test]
fn debian_base_rebuilds_a_cache_without_its_stamp_and_a_failed_build_leaves_none() {
    require_root();
    let cache = tempfile::Builder::new()
        .prefix("berth-debian-cache-")
        .tempdir()
        .unwrap();
    let rootfs = cache.path().join("rootfs");
    fs::create_dir_all(rootfs.join("usr/bin")).unwrap();
    fs::write(rootfs.join("usr/bin/curl"), "half-made").unwrap();
    // A port nothing listens on: bind one, then free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = output(
        debian_base_cmd(&["--rootfs-only"])
            .env("BERTH_DEBIAN_CACHE", cache.path())
            .env("DEBIAN_MIRROR", format!("http://127.0.0.1:{port}/debian"))
            .env("no_proxy", "127.0.0.1"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout.contains("unfinished build (no stamp)"), "{stdout}");
    assert!(stdout.contains("== debootstrap"), "{stdout}");
    assert!(stderr.contains("debootstrap failed"), "{stderr}");
    assert!(
        !cache.path().join("stamp").exists(),
        "a failed build wrote the stamp"
    );
    assert!(!rootfs.exists(), "the half-made rootfs is still there");
    assert!(!cache.path().join("rootfs.partial").exists());
}
