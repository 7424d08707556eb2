//! `berth config` and `berth secret` end to end: the real `berth` binary against a real
//! berth-scheduler (its own data dir and loopback port per test). Create, update, ls, inspect
//! and rm for both, the JSON shapes, the 1 MiB limit, a secret's value never in any output or
//! the scheduler's log, init-key and rotate-key, and a deployment rolled by a config update.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::binary;
use berth_tests::cluster::SchedulerProc;
use serde_json::Value;

/// `berth`'s exit statuses (README, "Exit statuses").
const EXIT_INVALID_ARGUMENT: i32 = 2;
const EXIT_NOT_FOUND: i32 = 5;
const EXIT_CONFLICT: i32 = 6;

/// What a secret holds in these tests: it must never come back in any output.
const MARKER: &str = "s3cr3t-marker-7c1e";

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` with `stdin` piped in.
fn run(cmd: &mut Command, stdin: &[u8]) -> Run {
    let out = berth_tests::output_with_stdin(cmd, stdin);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A scheduler with a secrets key, and a temp dir for files.
struct Fixture {
    sched: SchedulerProc,
    dir: tempfile::TempDir,
    key: PathBuf,
    key_id: String,
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-cli-files-")
        .tempdir()
        .expect("temp dir")
}

/// `berth secret init-key --out PATH -o json`, checked: its id, the file 0600, no key bytes
/// printed.
fn init_key(path: &Path) -> String {
    let r = run(
        Command::new(binary("berth"))
            .args(["secret", "init-key", "--out"])
            .arg(path)
            .args(["-o", "json"])
            .env_remove("BERTH_SCHEDULER"),
        b"",
    );
    assert_eq!(r.code, 0, "init-key: {r:?}");
    let written: Value = serde_json::from_str(&r.stdout).expect("init-key JSON");
    let id = written["key_id"].as_str().expect("key_id").to_string();
    assert_eq!(id.len(), 16, "{written}");
    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the key file is owner-only");
    let file: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    let key = file["key"].as_str().unwrap();
    assert!(!r.all().contains(key), "init-key printed the key: {r:?}");
    id
}

fn fixture() -> Fixture {
    let dir = temp_dir();
    let key = dir.path().join("secrets.key");
    let key_id = init_key(&key);
    let sched = SchedulerProc::start(&["--secrets-key", key.to_str().unwrap()]);
    Fixture {
        sched,
        dir,
        key,
        key_id,
    }
}

impl Fixture {
    fn berth(&self, args: &[&str], stdin: &[u8]) -> Run {
        run(&mut self.sched.berth(args), stdin)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.berth(args, b"");
        assert_eq!(r.code, 0, "berth {args:?}: {r:?}");
        r.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        let out = self.ok(&args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("berth {args:?}: bad JSON ({e}): {out}"))
    }

    fn file(&self, name: &str, content: &[u8]) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, content).unwrap();
        path.display().to_string()
    }
}

/// The listing's entry for `name`.
fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[test]
fn configs_create_update_list_inspect_and_remove() {
    let f = fixture();
    let v1 = f.file("app.conf", b"level = info\n");
    let out = f.ok(&["config", "create", "app-conf", "--from-file", &v1]);
    assert!(
        out.contains("app-conf") && out.contains("version 1"),
        "{out}"
    );

    // The same name again is a conflict; from standard input with `-` works.
    let r = f.berth(&["config", "create", "app-conf", "--from-file", &v1], b"");
    assert_eq!(r.code, EXIT_CONFLICT, "{r:?}");
    assert!(r.stderr.contains("app-conf"), "{r:?}");
    let r = f.berth(&["config", "create", "piped", "-"], b"from-stdin\n");
    assert_eq!(r.code, 0, "{r:?}");

    let list = f.json(&["config", "ls"]);
    let c = entry(&list, "app-conf");
    assert_eq!(c["version"], 1, "{c}");
    assert_eq!(c["versions"], serde_json::json!([1]), "{c}");
    assert_eq!(c["size_bytes"], 13, "{c}");
    assert_eq!(c["sha256"].as_str().unwrap().len(), 64, "{c}");
    assert!(c["used_by"].as_array().unwrap().is_empty(), "{c}");
    assert!(c["created"].as_str().unwrap().contains('T'), "{c}");
    entry(&list, "piped");

    // Same content: no new version. New content: version 2, and both stay readable.
    let same = f.json(&["config", "update", "app-conf", "--from-file", &v1]);
    assert_eq!(same["changed"], false, "{same}");
    assert_eq!(same["version"], 1, "{same}");
    let v2 = f.file("app2.conf", b"level = debug\n");
    let out = f.ok(&["config", "update", "app-conf", "-f", &v2]);
    assert!(out.contains("version 2"), "{out}");
    let shown = f.json(&["config", "inspect", "app-conf"]);
    assert_eq!(shown["data"], "level = debug\n", "{shown}");
    assert_eq!(shown["shown_version"], 2, "{shown}");
    assert_eq!(shown["versions"], serde_json::json!([1, 2]), "{shown}");
    let old = f.json(&["config", "inspect", "app-conf", "--version", "1"]);
    assert_eq!(old["data"], "level = info\n", "{old}");
    let table = f.ok(&["config", "inspect", "app-conf"]);
    assert!(table.contains("level = debug"), "{table}");

    f.ok(&["config", "rm", "app-conf"]);
    let r = f.berth(&["config", "inspect", "app-conf"], b"");
    assert_eq!(r.code, EXIT_NOT_FOUND, "{r:?}");
    assert!(r.stderr.contains("app-conf"), "{r:?}");
}

#[test]
fn values_over_one_mib_are_refused_naming_the_size() {
    let f = fixture();
    let big = f.file("big", &vec![b'x'; (1 << 20) + 1]);
    for kind in ["config", "secret"] {
        let r = f.berth(&[kind, "create", "big", "--from-file", &big], b"");
        assert_eq!(r.code, EXIT_INVALID_ARGUMENT, "{kind}: {r:?}");
        assert!(r.stderr.contains("1048577 bytes"), "{kind}: {r:?}");
    }
    let exact = f.file("exact", &vec![b'y'; 1 << 20]);
    f.ok(&["config", "create", "exact", "--from-file", &exact]);
    assert_eq!(
        entry(&f.json(&["config", "ls"]), "exact")["size_bytes"],
        1 << 20
    );
}

#[test]
fn a_secret_value_never_appears_in_output_or_the_log() {
    let f = fixture();
    let mut outputs = Vec::new();
    let r = f.berth(&["secret", "create", "db-password", "-"], MARKER.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    outputs.push(r.all());
    let file = f.file("pw", format!("{MARKER}-2").as_bytes());
    let r = f.berth(
        &["secret", "update", "db-password", "--from-file", &file],
        b"",
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("version 2"), "{r:?}");
    outputs.push(r.all());
    for args in [
        &["secret", "ls"][..],
        &["secret", "ls", "-o", "json"],
        &["secret", "inspect", "db-password"],
        &["secret", "inspect", "db-password", "-o", "json"],
    ] {
        let r = f.berth(args, b"");
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        outputs.push(r.all());
    }
    let shown = f.json(&["secret", "inspect", "db-password"]);
    assert_eq!(shown["version"], 2, "{shown}");
    assert_eq!(shown["versions"], serde_json::json!([1, 2]), "{shown}");
    assert_eq!(shown["key_id"], f.key_id.as_str(), "{shown}");
    assert_eq!(shown["size_bytes"], MARKER.len() + 2, "{shown}");
    assert!(
        shown.get("data").is_none() && shown.get("sha256").is_none(),
        "{shown}"
    );
    // A value typed on the command line is refused without being echoed.
    let r = f.berth(&["secret", "create", "typed", MARKER], b"");
    assert_eq!(r.code, EXIT_INVALID_ARGUMENT, "{r:?}");
    outputs.push(r.all());

    for out in &outputs {
        assert!(!out.contains(MARKER), "the value was printed: {out}");
    }
    assert!(
        !f.sched.log().contains(MARKER),
        "the value is in the scheduler's log"
    );

    f.ok(&["secret", "rm", "db-password"]);
    let r = f.berth(&["secret", "inspect", "db-password"], b"");
    assert_eq!(r.code, EXIT_NOT_FOUND, "{r:?}");
}

#[test]
fn rotate_key_rewraps_and_the_scheduler_restarts_on_the_new_key() {
    let mut f = fixture();
    for (name, value) in [("a", b"one"), ("b", b"two")] {
        let r = f.berth(&["secret", "create", name, "-"], value);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let new_key = f.dir.path().join("new.key");
    let new_id = init_key(&new_key);
    // init-key never replaces a key unless told.
    let r = run(
        Command::new(binary("berth"))
            .args(["secret", "init-key", "--out"])
            .arg(&new_key),
        b"",
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("--force"), "{r:?}");

    let rotated = f.json(&[
        "secret",
        "rotate-key",
        "--new-key",
        new_key.to_str().unwrap(),
    ]);
    assert_eq!(rotated["old_key_id"], f.key_id.as_str(), "{rotated}");
    assert_eq!(rotated["new_key_id"], new_id.as_str(), "{rotated}");
    assert!(rotated["rewrapped"].as_u64().unwrap() >= 2, "{rotated}");
    for name in ["a", "b"] {
        let shown = f.json(&["secret", "inspect", name]);
        assert_eq!(shown["key_id"], new_id.as_str(), "{shown}");
    }
    // The scheduler's --secrets-key path now holds the new key: it starts and serves them.
    fs::copy(&new_key, &f.key).unwrap();
    f.sched.restart();
    assert_eq!(f.json(&["secret", "ls"]).as_array().unwrap().len(), 2);
}

#[test]
fn without_a_secrets_key_secrets_are_refused_and_configs_work() {
    let sched = SchedulerProc::start(&[]);
    let r = run(&mut sched.berth(&["secret", "create", "db", "-"]), b"x");
    assert_eq!(r.code, EXIT_CONFLICT, "FailedPrecondition: {r:?}");
    assert!(r.stderr.contains("--secrets-key"), "{r:?}");
    let r = run(&mut sched.berth(&["config", "create", "c", "-"]), b"x");
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn a_config_update_rolls_the_deployment_that_uses_it() {
    let f = fixture();
    let r = f.berth(&["config", "create", "app-conf", "-"], b"v1\n");
    assert_eq!(r.code, 0, "{r:?}");
    let r = f.berth(&["secret", "create", "db", "-"], MARKER.as_bytes());
    assert_eq!(r.code, 0, "{r:?}");
    // No node: the replica stays pending, which is all this test needs of it.
    let spec = f.file(
        "app.toml",
        br#"name = "files-app"
image = "files-busybox:1"
command = ["sleep", "3600"]
configs = [{ name = "app-conf", path = "/etc/app.conf", mode = "0440" }]
secrets = [{ name = "db" }]
env_from_secret = { DB_PASSWORD = "db" }
"#,
    );
    f.ok(&["deploy", "-f", &spec]);
    let c = entry(&f.json(&["config", "ls"]), "app-conf").clone();
    assert_eq!(c["used_by"], serde_json::json!(["files-app"]), "{c}");
    let s = entry(&f.json(&["secret", "ls"]), "db").clone();
    assert_eq!(s["used_by"], serde_json::json!(["files-app"]), "{s}");

    let file = f.file("v2", b"v2\n");
    let updated = f.json(&["config", "update", "app-conf", "--from-file", &file]);
    assert_eq!(updated["changed"], true, "{updated}");
    assert_eq!(updated["version"], 2, "{updated}");
    assert_eq!(
        updated["rolled"],
        serde_json::json!(["files-app"]),
        "{updated}"
    );

    // Revision 1 pinned version 1, revision 2 version 2; the secret stays at 1.
    let history = f.json(&["history", "files-app"]);
    let revisions = history.as_array().unwrap();
    let pinned = |rev: u64| {
        let r = revisions.iter().find(|r| r["revision"] == rev).unwrap();
        (r["configs"]["app-conf"].clone(), r["secrets"]["db"].clone())
    };
    assert_eq!(pinned(1), (1.into(), 1.into()), "{history}");
    assert_eq!(pinned(2), (2.into(), 1.into()), "{history}");
    let table = f.ok(&["history", "files-app"]);
    assert!(
        table.contains("config:app-conf@2") && table.contains("secret:db@1"),
        "{table}"
    );

    // In use: refused.
    let r = f.berth(&["config", "rm", "app-conf"], b"");
    assert_eq!(r.code, EXIT_CONFLICT, "{r:?}");
    assert!(
        !f.sched.log().contains(MARKER),
        "the value is in the scheduler's log"
    );
}
