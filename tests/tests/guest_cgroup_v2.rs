//! The pure cgroup v2 guest: Debian's kernel booted under qemu with `cgroup_no_v1=all` and no
//! systemd, from an initramfs holding busybox, berth-runtime, the runtime's cgroup test
//! binaries and crun. In the guest the runtime's cgroup tests run against v2 files (limits,
//! controllers, eBPF devices, freeze, OOM, stats, update, failed creates, explain) and one
//! lifecycle is timed against crun; TAP comes back over the harness's results port.
//!
//! Root; needs qemu-system-x86, linux-image-amd64, busybox-static and crun (scripts/setup.sh).
//! `BERTH_GUEST_TIMED_RUNTIME=target/release/berth-runtime` times that build against crun
//! instead of the debug one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_tests::{require_root, require_tool, workspace_root};
use berth_vm::{Accel, BootSpec, Builder, initramfs::EXIT_MARKER};

/// Where guest images are cached between runs (the packs that do not change per build).
const CACHE: &str = "/var/cache/berth-tests/vm";
/// A berth-runtime build to time against crun instead of the one the tests drive (the debug
/// build), e.g. target/release/berth-runtime.
const TIMED_RUNTIME_ENV: &str = "BERTH_GUEST_TIMED_RUNTIME";
/// The guest's checks; /init is the harness's prelude, this, then the runs listed below.
const SCRIPT: &str = include_str!("../guest/cgroup_v2.sh");

/// The runtime's test binaries run in the guest, with the filters that pick their cgroup
/// tests (`--include-ignored` runs the v2-only ones, ignored on this v1 host).
const RUNS: &[(&str, &[&str])] = &[
    ("berth_runtime", &["cgroups::", "sys::oom", "explain::"]),
    ("resources", &[]),
    ("exec_update", &["update"]),
    (
        "lifecycle",
        &["failed_creates_leave_nothing_behind", "wrong_states"],
    ),
    ("cgroup_v2", &[]),
];

/// The runtime's test executables by target name, and the berth-runtime binary they drive,
/// built (if needed) by cargo. `--workspace`, not `-p berth-runtime`: the workspace's feature
/// set, so after `cargo nextest run --workspace` (scripts/test.sh) nothing rebuilds, and no
/// binary other tests are running is replaced under them.
fn runtime_test_binaries() -> (Vec<(String, PathBuf)>, PathBuf) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .current_dir(workspace_root())
        .output()
        .expect("run cargo test --no-run");
    assert!(
        out.status.success(),
        "cargo test --workspace --no-run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tests = Vec::new();
    let mut runtime = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let runtime_package = msg["manifest_path"]
            .as_str()
            .is_some_and(|m| Path::new(m) == workspace_root().join("runtime/Cargo.toml"));
        if !runtime_package {
            continue;
        }
        let name = msg["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name == "berth-runtime" && msg["profile"]["test"] == false {
            runtime = Some(PathBuf::from(exe));
        } else if msg["profile"]["test"] == true {
            tests.push((name, PathBuf::from(exe)));
        }
    }
    let runtime = runtime.expect("cargo built no berth-runtime binary");
    (tests, runtime)
}

/// The part that does not change with each build: busybox, the virtio modules, crun.
fn base_part(kernel: &berth_vm::Kernel) -> Builder {
    let mut b = Builder::new();
    b.busybox().expect("busybox-static");
    // loop: /dev/loop-control (10:237) is the device the runtime's devices test makes.
    for module in ["virtio_pci", "virtio_console", "virtio_blk", "loop"] {
        b.module(kernel, module)
            .unwrap_or_else(|e| panic!("module {module}: {e}"));
    }
    b.binary_with_libs("/usr/bin/crun", &require_tool("crun"))
        .expect("crun and its libraries");
    for dir in ["/tmp", "/run", "/mnt"] {
        b.dir(dir, if dir == "/tmp" { 0o1777 } else { 0o755 });
    }
    b
}

/// The per-build part: berth-runtime where the test binaries look for it, the test
/// binaries, the lifecycle bundle and /init.
fn test_part(base: &Builder, tests: &[(String, PathBuf)], runtime: &Path) -> Builder {
    let mut b = Builder::new();
    b.binary_with_libs(&runtime.to_string_lossy(), runtime)
        .expect("berth-runtime");
    let mut script = String::from(SCRIPT);
    for (name, filters) in RUNS {
        let (_, exe) = tests
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("cargo built no test binary {name}: {tests:?}"));
        b.binary_with_libs(&exe.to_string_lossy(), exe)
            .expect("a test binary");
        script.push_str(&format!(
            "run_tests {name} {} --include-ignored {}\n",
            exe.display(),
            filters.join(" ")
        ));
    }
    let timed = match std::env::var_os(TIMED_RUNTIME_ENV) {
        Some(path) => {
            let guest = "/usr/local/bin/berth-runtime-timed";
            b.binary_with_libs(guest, Path::new(&path))
                .unwrap_or_else(|e| panic!("{TIMED_RUNTIME_ENV}: {e}"));
            guest.to_string()
        }
        None => runtime.display().to_string(),
    };
    script.push_str(&format!(
        "lifecycles {timed} 10\n\
         echo \"1..$N\" >&3\nexec 3>&-\necho {EXIT_MARKER}$FAILED\npoweroff -f\n"
    ));
    let mut config = serde_json::to_value(berth_runtime::spec::default_spec()).unwrap();
    config["process"]["terminal"] = serde_json::json!(false);
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    b.bytes("/bundle/config.json", config.to_string(), 0o644)
        .file("/bundle/rootfs/bin/busybox", Path::new("/bin/busybox"))
        .expect("busybox");
    b.symlink("/bundle/rootfs/bin/true", "busybox");
    for dir in ["proc", "sys", "dev", "tmp"] {
        b.dir(&format!("/bundle/rootfs/{dir}"), 0o755);
    }
    b.init(&format!("{}{script}", base.prelude(true)));
    b
}

/// Concatenated newc archives unpack one after the other into the same root.
fn concat(parts: &[&Path], out: &Path) {
    let mut file = fs::File::create(out).unwrap();
    for p in parts {
        let mut f = fs::File::open(p).unwrap();
        std::io::copy(&mut f, &mut file).unwrap();
    }
    file.flush().unwrap();
}

/// KVM if the cached probe says it works here, else TCG.
fn accelerator(kernel: &berth_vm::Kernel, base: &Builder) -> Accel {
    let mut probe = base.clone();
    probe.init(&format!(
        "{}echo {EXIT_MARKER}0\npoweroff -f\n",
        base.prelude(false)
    ));
    let initrd = probe
        .pack_cached(Path::new(CACHE), "kvm-probe")
        .expect("pack the probe");
    berth_vm::accel::choose(Path::new(CACHE), &kernel.path, &initrd).expect("accelerator")
}

/// TAP lines: (passed, description) for each test point, and the plan's count if present.
fn parse_tap(text: &str) -> (Vec<(bool, String)>, Option<usize>) {
    let mut points = Vec::new();
    let mut plan = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("not ok") {
            points.push((false, rest.trim_start_matches([' ', '-']).to_string()));
        } else if let Some(rest) = line.strip_prefix("ok") {
            points.push((true, rest.trim_start_matches([' ', '-']).to_string()));
        } else if let Some(n) = line.strip_prefix("1..") {
            plan = n.trim().parse().ok();
        }
    }
    (points, plan)
}

#[test]
fn cgroup_v2_guest() {
    require_root();
    require_tool("qemu-system-x86_64");
    require_tool("busybox");
    let kernel = berth_vm::kernel::newest().expect("a Debian kernel (linux-image-amd64)");
    let (tests, runtime) = runtime_test_binaries();
    let base = base_part(&kernel);
    let base_cpio = base
        .pack_cached(Path::new(CACHE), "cgroup-v2-base")
        .expect("pack the base");
    let work = tempfile::Builder::new()
        .prefix("berth-guest-v2-")
        .tempdir()
        .unwrap();
    let part = work.path().join("tests.cpio");
    test_part(&base, &tests, &runtime)
        .pack(&part)
        .expect("pack the tests");
    let initrd = work.path().join("initrd.cpio");
    concat(&[&base_cpio, &part], &initrd);
    let disk = work.path().join("scratch.img");
    fs::File::create(&disk).unwrap().set_len(16 << 20).unwrap();
    let accel = accelerator(&kernel, &base);

    let mut spec = BootSpec::new(&kernel.path, &initrd);
    spec.append = "console=ttyS0 quiet panic=-1 cgroup_no_v1=all rdinit=/init".into();
    spec.memory_mb = 2048;
    spec.cpus = 2;
    spec.accel = accel;
    spec.deadline = Duration::from_secs(420);
    spec.results = true;
    spec.disks = vec![disk];
    let outcome = berth_vm::boot(&spec).expect("boot the guest");
    let tap = String::from_utf8_lossy(&outcome.results).into_owned();
    let (points, plan) = parse_tap(&tap);
    let failed: Vec<&str> = points
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, d)| d.as_str())
        .collect();
    let diagnose = || {
        format!(
            "console:\n{}\nqemu stderr: {}\nresults:\n{tap}",
            outcome.console_text(),
            outcome.qemu_stderr
        )
    };
    assert!(
        !outcome.timed_out,
        "the guest ran past {:?}\n{}",
        spec.deadline,
        diagnose()
    );
    assert!(
        failed.is_empty(),
        "failed in the guest: {failed:#?}\n{}",
        diagnose()
    );
    assert_eq!(
        plan,
        Some(points.len()),
        "the guest stopped short\n{}",
        diagnose()
    );
    assert_eq!(outcome.exit_code, Some(0), "{}", diagnose());
    assert!(points.len() > 30, "too few checks ran: {points:?}");
    println!(
        "guest ({}) boot to first result: {:?}; whole run {:?}",
        accel.as_str(),
        outcome.first_result,
        outcome.elapsed
    );
    let per_cycle = |label: &str| {
        tap.lines()
            .find_map(|l| l.strip_prefix(&format!("# lifecycle {label} ms_per_cycle=")))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no lifecycle figure for {label}: {tap}"))
    };
    let (berth, crun) = (per_cycle("berth-runtime"), per_cycle("crun"));
    assert!(berth > 0 && crun > 0, "{tap}");
    let which = std::env::var(TIMED_RUNTIME_ENV).unwrap_or_else(|_| "the debug build".into());
    println!(
        "lifecycle of /bin/true in the guest (berth-runtime: {which}): {berth} ms vs crun \
         {crun} ms, ratio {:.2}",
        f64::from(berth) / f64::from(crun)
    );
}
