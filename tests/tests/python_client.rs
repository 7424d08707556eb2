//! berth's gRPC API from Python (tests/python/berth_client.py, with stubs generated from
//! proto/ by grpcio-tools): real RPCs on a real scheduler and agent, and server reflection in
//! both versions (grpcio-reflection speaks only v1alpha) on the leader, a standby and the
//! agent; a config created and listed through the standby (forwarded to the leader). The agent
//! is given its schedulers as bare HOST:PORT addresses.

use berth_tests::agent_node::unique_node_name;
use berth_tests::cluster::{Fabric, SchedulerProc, start_nodes_at};
use berth_tests::etcd::EtcdCluster;
use berth_tests::{poll_until, pyvenv, require_root};

const IMAGE: &str = "py-busybox:1";

#[test]
fn python_client_calls_the_api_and_lists_services_through_both_reflection_versions() {
    require_root();
    // The venv first (a first run installs grpcio), before the etcd lease starts ticking.
    pyvenv::python();
    let etcd = EtcdCluster::start(1);
    let flags = etcd.scheduler_flags("py", 5);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let scheds: Vec<SchedulerProc> = (0..2).map(|_| SchedulerProc::start_exact(&flags)).collect();
    let leader = poll_until("one leader", std::time::Duration::from_secs(60), || {
        let leading: Vec<usize> = (0..scheds.len())
            .filter(|&i| scheds[i].log().contains("elected leader"))
            .collect();
        (leading.len() == 1).then(|| leading[0])
    });
    let standby = 1 - leader;
    // Bare HOST:PORT for the agent, as an operator would type them.
    let addrs: Vec<String> = scheds.iter().map(SchedulerProc::address).collect();
    let mut fabric = Fabric::new();
    let nodes = start_nodes_at(&addrs.join(","), &mut fabric, 1, "py", IMAGE);
    let (mut client, _stubs) = pyvenv::client("berth_client.py");
    let out = client
        .args(["--scheduler", &addrs[leader]])
        .args(["--standby", &addrs[standby]])
        .args(["--agent", &nodes[0].address()])
        .args(["--image", IMAGE])
        .args(["--name", &unique_node_name("py")])
        .output()
        .expect("starting the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "berth_client.py failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for step in [
        "ok: generated stubs",
        "ok: ListNodes",
        "ok: Apply refuses a duplicated service port",
        "ok: Get: ",
        "ok: agent ListContainers",
        "ok: ListServices: ",
        "ok: ListReleases: ",
        "ok: ListAudit: ",
        "ok: ListAudit through a standby",
        "ok: CreateConfig/ListConfigs",
        "ok: reflection v1alpha on the scheduler",
        "ok: reflection v1 on the scheduler",
        "ok: reflection v1alpha on the agent",
        "ok: reflection v1 on the agent",
        "ok: reflection v1alpha on a standby scheduler",
        "ok: reflection v1 on a standby scheduler",
        "ok: all",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}\n{stderr}");
    }
}
