//! The binary's log subscriber: the library's warnings always reach `--log`, its debug records
//! only with `--debug`, each one a JSON line with runc's keys.

mod common;

use std::fs;
use std::path::Path;

use common::TestContainer;
use serde_json::{Value, json};

/// `run` with `--log=LOG --log-format=json` (and `extra` global flags); the records written.
fn run_logged(c: &TestContainer, log: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.push(format!("--log={}", log.display()));
    args.push("--log-format=json".into());
    args.extend(["run".into(), "--bundle".into()]);
    args.push(c.bundle().display().to_string());
    args.push(c.id.clone());
    let out = c.output(&args);
    assert!(out.status.success(), "run failed: {out:?}");
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn has(records: &[Value], level: &str, needle: &str) -> bool {
    records
        .iter()
        .any(|r| r["level"] == level && r["msg"].as_str().is_some_and(|m| m.contains(needle)))
}

#[test]
fn warnings_always_reach_the_log_and_debug_records_only_with_debug() {
    let mut c = TestContainer::new("logrecords", &["true"]);
    // Ignored on this host, with a warning from the library's create.
    c.config["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
    c.write_config();

    let quiet = run_logged(&c, &c.bundle().join("quiet.log"), &[]);
    assert!(has(&quiet, "warn", "selinux"), "{quiet:?}");
    assert!(quiet.iter().all(|r| r["level"] != "debug"), "{quiet:?}");

    let verbose = run_logged(&c, &c.bundle().join("debug.log"), &["--debug"]);
    assert!(has(&verbose, "warn", "selinux"), "{verbose:?}");
    assert!(has(&verbose, "debug", "create: begin"), "{verbose:?}");
    assert!(has(&verbose, "debug", "run: deleted"), "{verbose:?}");
    // init's records after pivot_root reach the host's log file, not a file of that name in
    // the container's root.
    assert!(
        has(&verbose, "debug", "init: user and capabilities set"),
        "{verbose:?}"
    );
    for record in &verbose {
        assert!(
            record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{record}"
        );
    }
}
