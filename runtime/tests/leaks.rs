//! Many create/run/exec/delete cycles, successful and failing, leave the host as it was: no
//! state dirs, cgroups or mounts, and no process the runtime orphaned.
//!
//! This file holds one test on purpose: it makes its process a child subreaper, as conmon
//! is, so that whatever the runtime's processes leave behind (a child not reaped, a helper
//! not waited for, a container process that outlives delete) is re-parented to it and shows
//! up among its children. Another test in the same process would add its own.

mod common;

use std::fs;

use common::TestContainer;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use serde_json::json;

/// This process's children, live or zombie, from every process's stat line.
fn children() -> Vec<String> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split(' ').nth(1) == Some(me.as_str())
        })
        .collect()
}

fn bundle_mounts(c: &TestContainer) -> usize {
    let ours = c.bundle().to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&ours))
        .count()
}

#[test]
fn run_exec_and_failed_create_cycles_leave_the_host_as_before() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER");
    assert_eq!(
        children(),
        Vec::<String>::new(),
        "children before the cycles"
    );
    let ok = TestContainer::new("cycles", &["true"]);
    let mut failing = TestContainer::new("cycles-fail", &["true"]);
    // Init fails after its root is built: the runtime must kill and reap it.
    failing.config["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}]);
    failing.write_config();
    let mounts_before = (bundle_mounts(&ok), bundle_mounts(&failing));
    for i in 0..300 {
        let out = ok.run();
        assert!(out.status.success(), "cycle {i}: {out:?}");
        if i % 10 == 0 {
            let out = failing.run();
            assert!(!out.status.success(), "cycle {i}: {out:?}");
        }
    }

    // exec: the runtime forks a helper that clones the process beside itself.
    let long = TestContainer::new("cycles-exec", &["sleep", "1000"]);
    let out = long.with_stdio_files(&["run", "--detach"]);
    assert!(out.status.success(), "{}", long.container_stdout());
    let init = long.state()["pid"].as_i64().unwrap();
    for i in 0..30 {
        let out = long.output(["exec", &long.id, "true"]);
        assert!(out.status.success(), "exec {i}: {out:?}");
    }
    long.ok(["delete", "--force", &long.id]);
    // The detached init is ours to reap, as it is conmon's: the runtime left by design.
    waitpid(Pid::from_raw(i32::try_from(init).unwrap()), None).expect("reap the detached init");

    assert_eq!(
        children(),
        Vec::<String>::new(),
        "processes the runtime left"
    );
    for c in [&ok, &failing, &long] {
        assert!(c.leftovers().is_empty(), "{:?}", c.leftovers());
        let states = fs::read_dir(c.state_root()).map_or(0, |d| d.count());
        assert_eq!(states, 0, "state dirs left");
    }
    assert_eq!((bundle_mounts(&ok), bundle_mounts(&failing)), mounts_before);
}
