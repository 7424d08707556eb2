//! `berth compare`: one workload as a container and as a qemu VM, through the `berth` binary,
//! as root. Needs qemu-system-x86 and a Debian kernel in /boot (scripts/setup.sh); the
//! initramfs is packed by berth-vm itself, without the cpio tool.

use std::fs;

use berth_tests::{Berth, busybox_image, require_root, require_tool, run_ok};

#[test]
fn compare_container_and_vm() {
    require_root();
    require_tool("qemu-system-x86_64");
    let kernels: Vec<_> = fs::read_dir("/boot")
        .expect("read /boot")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        .collect();
    assert!(
        !kernels.is_empty(),
        "no /boot/vmlinuz-*: run scripts/setup.sh (installs linux-image-amd64)"
    );
    let berth = Berth::new();
    busybox_image(&berth, "busybox:latest");
    let out = run_ok(&mut berth.cmd([
        "compare",
        "busybox:latest",
        "--runs",
        "1",
        "-o",
        "json",
        "--",
        "sh",
        "-c",
        "uname -r; echo done",
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"));
    let host = fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("host kernel")
        .trim()
        .to_string();
    assert_eq!(report["host_kernel"], host.as_str(), "{report:#}");
    let container = &report["container"];
    let vm = &report["vm"];
    assert_eq!(container["kernel"], host.as_str(), "{report:#}");
    let vm_kernel = vm["kernel"].as_str().expect("vm kernel");
    assert!(!vm_kernel.is_empty() && vm_kernel != host, "{report:#}");
    assert!(
        kernels
            .iter()
            .any(|e| e.file_name().to_string_lossy() == format!("vmlinuz-{vm_kernel}")),
        "the VM's kernel is not one from /boot: {report:#}"
    );
    for side in [container, vm] {
        let out = side["output"].as_str().expect("output");
        assert!(out.contains("done"), "{report:#}");
        // The workload's own `uname -r` agrees with the wrapper's kernel line.
        assert!(out.contains(side["kernel"].as_str().unwrap()), "{report:#}");
        assert_eq!(side["exit_code"], 0, "{report:#}");
        assert!(side["time_to_output_ms"]["median"].as_f64().unwrap() > 0.0);
        assert!(side["time_to_exit_ms"]["median"].as_f64().unwrap() > 0.0);
        assert!(
            side["memory_bytes"]["median"].as_f64().unwrap() > 0.0,
            "{report:#}"
        );
        assert!(side["disk_bytes"].as_u64().unwrap() > 0);
    }
    // Limits: the container's are cgroup files, read back as the VM's size; the container
    // still sees the host's memory and CPUs, the VM only its own.
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let host_mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        * 1024;
    let host_cpus = fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u64;
    let (cl, vl) = (&container["limits"], &vm["limits"]);
    assert_eq!(cl["memory_limit_bytes"], 128u64 << 20, "{report:#}");
    assert_eq!(cl["cpus_limit"], 1.0, "{report:#}");
    assert!(
        cl["source"].as_str().unwrap().contains("/sys/fs/cgroup/"),
        "{report:#}"
    );
    assert_eq!(cl["seen_memory_bytes"], host_mem, "{report:#}");
    assert_eq!(cl["seen_cpus"], host_cpus, "{report:#}");
    assert_eq!(vl["memory_limit_bytes"], 128u64 << 20, "{report:#}");
    let vm_seen = vl["seen_memory_bytes"].as_u64().expect("the VM's MemTotal");
    assert!(vm_seen > 0 && vm_seen <= 128 << 20, "{report:#}");
    assert_eq!(vl["seen_cpus"], 1, "{report:#}");
    assert_eq!(container["workload_visible_on_host"], true, "{report:#}");
    assert_eq!(vm["workload_visible_on_host"], false, "{report:#}");
    let accel = report["accelerator"].as_str().expect("accelerator");
    assert!(accel == "kvm" || accel == "tcg", "{report:#}");
    // The VM's figures are qemu's: more memory than the container's processes.
    assert!(
        vm["memory_bytes"]["median"].as_f64().unwrap()
            > container["memory_bytes"]["median"].as_f64().unwrap(),
        "{report:#}"
    );
}
