//! Hooks run in the spec's order with the state on stdin; a seccomp profile's errno reaches
//! the process.

mod common;

use std::fs;

use common::TestContainer;
use serde_json::json;

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    let mut c = TestContainer::new("hooks", &["true"]);
    let logdir = c.bundle().join("hooklog");
    fs::create_dir(&logdir).unwrap();
    let host_log = logdir.join("log");
    let hook = |name: &str, log: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {log}")], "timeout": 10});
    let host = host_log.display().to_string();
    c.config["hooks"] = json!({
        "prestart": [hook("prestart", &host)],
        "createRuntime": [hook("createRuntime", &host)],
        // Runs in the container's namespaces before pivot_root: host paths still resolve.
        "createContainer": [hook("createContainer", &host)],
        // Runs inside the container after pivot_root: the log is bind-mounted in.
        "startContainer": [hook("startContainer", "/hooklog/log")],
        "poststart": [hook("poststart", &host)],
        "poststop": [hook("poststop", &host)],
    });
    c.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/hooklog", "type": "bind", "source": logdir, "options": ["rbind", "rw"]}));
    c.write_config();
    let out = c.run();
    assert!(out.status.success(), "{out:?}");
    let log = fs::read_to_string(&host_log).unwrap();
    let lines: Vec<(&str, serde_json::Value)> = log
        .lines()
        .map(|l| {
            let (name, json) = l.split_once(' ').unwrap();
            (
                name,
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}: {json}")),
            )
        })
        .collect();
    let names: Vec<&str> = lines.iter().map(|(n, _)| *n).collect();
    // poststart runs in the runtime once the start is signalled, concurrently with init's
    // startContainer hook: only their relative order is not fixed.
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing: {log}"))
    };
    assert_eq!(
        &names[..3],
        ["prestart", "createRuntime", "createContainer"],
        "{log}"
    );
    assert!(
        pos("createContainer") < pos("startContainer") && pos("createContainer") < pos("poststart")
    );
    assert_eq!(names.last(), Some(&"poststop"), "{log}");
    assert_eq!(names.len(), 6, "{log}");
    for (name, state) in &lines {
        assert_eq!(state["id"], c.id.as_str(), "{name}");
        assert!(state["pid"].as_i64().unwrap() > 0, "{name}");
        assert_eq!(state["bundle"], c.bundle().display().to_string(), "{name}");
    }
    assert_eq!(lines[0].1["status"], "creating");
    assert_eq!(lines[pos("poststart")].1["status"], "running");
    assert_eq!(lines[5].1["status"], "stopped");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn failing_prestart_hook_fails_create_and_leaves_nothing() {
    let mut c = TestContainer::new("hookfail", &["true"]);
    c.config["hooks"] = json!({"prestart": [{"path": "/bin/false", "args": ["false"]}]});
    c.write_config();
    let out = c.create();
    assert!(!out.status.success());
    let err = fs::read_to_string(c.bundle().join("stderr")).unwrap();
    assert!(err.contains("prestart hook /bin/false"), "{err}");
    assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
}

#[test]
fn seccomp_denies_mkdir_with_the_spec_errno() {
    let mut c = TestContainer::new(
        "seccomp",
        &["sh", "-c", "mkdir /tmp/x; echo mkdir=$?; echo after=ok"],
    );
    c.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        // EDQUOT (122): an errno mkdir on a tmpfs never returns by itself.
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}]
    });
    c.write_config();
    let out = c.run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(common::kv(&stdout)["mkdir"], "1", "{stdout}");
    assert_eq!(common::kv(&stdout)["after"], "ok", "{stdout}");
    assert!(stderr.contains("Disk quota exceeded"), "{stderr}");
    assert!(!c.rootfs().join("tmp/x").exists());
}

#[test]
fn seccomp_allow_list_with_default_errno() {
    // An allow list built from the default profile's shape: everything listed is allowed,
    // anything else gets EPERM; mkdir is left out.
    let allowed = [
        "read",
        "write",
        "open",
        "openat",
        "close",
        "stat",
        "fstat",
        "lstat",
        "newfstatat",
        "statx",
        "mmap",
        "munmap",
        "mprotect",
        "brk",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "ioctl",
        "access",
        "faccessat",
        "faccessat2",
        "execve",
        "exit",
        "exit_group",
        "wait4",
        "clone",
        "clone3",
        "fork",
        "vfork",
        "getpid",
        "getppid",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "fcntl",
        "dup2",
        "dup3",
        "pipe",
        "pipe2",
        "arch_prctl",
        "set_tid_address",
        "getcwd",
        "chdir",
        "uname",
        "getdents64",
        "lseek",
        "readlink",
        "prlimit64",
        "getrandom",
        "set_robust_list",
        "rseq",
        "futex",
        "sigaltstack",
        "prctl",
        "setpgid",
        "getpgrp",
        "kill",
    ];
    let mut c = TestContainer::new(
        "seccomp-allow",
        &["sh", "-c", "echo hello; mkdir /tmp/y; echo mkdir=$?"],
    );
    c.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": allowed.as_slice(), "action": "SCMP_ACT_ALLOW"}]
    });
    c.write_config();
    let out = c.run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("hello"), "{out:?}");
    assert_eq!(common::kv(&stdout)["mkdir"], "1", "{stdout}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}
