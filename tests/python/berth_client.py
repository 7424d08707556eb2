"""berth's gRPC API from Python, as a pipeline or a tool outside Rust would use it.

Generates stubs from proto/ with grpc_tools.protoc, calls real RPCs on a running scheduler
and agent (list nodes, deploy and follow the status, list the node's containers, delete;
create and list a config, and list the audit log, through a standby when there is one, which
forwards them; list releases and the audit log), and lists both daemons' services through server reflection in both versions:
grpc.reflection.v1alpha with grpcio-reflection (the only version it speaks) and
grpc.reflection.v1 through a raw stub. Any failure raises, so the exit status is non-zero.
Driven by tests/tests/python_client.rs.
"""

import argparse
import hashlib
import ipaddress
import glob
import os
import sys
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_tools import protoc

# What each daemon must list through reflection, besides its own API.
COMMON = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
SCHEDULER = COMMON | {"berth.v1.DeploymentService", "berth.v1.NodeService", "berth.v1.AuthService",
                      "berth.v1.ConfigService", "berth.v1.SecretService",
                      "berth.v1.EnvironmentService", "berth.v1.ReleaseService",
                      "berth.v1.EventService"}
AGENT = COMMON | {"berth.v1.AgentService"}


def generate(proto_dir, out):
    """Python stubs for every berth .proto, written under out/berth/v1/."""
    files = sorted(glob.glob(os.path.join(proto_dir, "berth", "v1", "*.proto")))
    assert files, f"no .proto files under {proto_dir}"
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
         f"--python_out={out}", f"--grpc_python_out={out}"] + files
    )
    assert rc == 0, f"grpc_tools.protoc failed with {rc}"
    sys.path.insert(0, out)
    print(f"ok: generated stubs for {len(files)} files")


def until(what, within, check):
    """check() until it returns something truthy; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def scheduler_rpcs(channel, agent_channel, image, name):
    from berth.v1 import agent_pb2, agent_pb2_grpc, deploy_pb2, deploy_pb2_grpc, types_pb2

    deploy = deploy_pb2_grpc.DeploymentServiceStub(channel)
    nodes = until("a ready node", 60, lambda: [
        n for n in deploy.ListNodes(deploy_pb2.ListNodesRequest()).nodes if n.ready
    ])
    print(f"ok: ListNodes: {[n.name for n in nodes]}")

    spec = deploy_pb2.DeploymentSpec(
        name=name,
        image=image,
        command=["sleep", "3600"],
        replicas=1,
        resources=types_pb2.Resources(cpu_millis=100, memory_bytes=32 << 20),
        service_ports=[types_pb2.ServicePort(name="http", port=80, target=8080,
                                             protocol=types_pb2.PROTOCOL_TCP)],
    )
    duplicated = deploy_pb2.DeploymentSpec()
    duplicated.CopyFrom(spec)
    duplicated.service_ports.append(types_pb2.ServicePort(port=80, target=9090,
                                                          protocol=types_pb2.PROTOCOL_TCP))
    try:
        deploy.Apply(deploy_pb2.ApplyRequest(spec=duplicated))
        raise AssertionError("Apply with a duplicated service port succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "service_ports" in e.details(), e.details()
        print(f"ok: Apply refuses a duplicated service port: {e.details()}")
    applied = deploy.Apply(deploy_pb2.ApplyRequest(spec=spec))
    assert applied.changed and applied.deployment.revision == 1, applied
    print(f"ok: Apply: {name} revision {applied.deployment.revision}")

    def complete():
        d = deploy.Get(deploy_pb2.GetDeploymentRequest(name=name))
        return d if d.phase == deploy_pb2.ROLLOUT_PHASE_COMPLETE and d.ready_replicas == 1 else None

    done = until("the deployment to complete", 90, complete)
    print(f"ok: Get: {name} {deploy_pb2.RolloutPhase.Name(done.phase)}, "
          f"{done.ready_replicas}/{done.replicas} ready")

    agent = agent_pb2_grpc.AgentServiceStub(agent_channel)
    listed = agent.ListContainers(agent_pb2.ListContainersRequest())
    mine = [c for c in listed.containers if c.deployment == name]
    assert len(mine) == 1 and mine[0].state == types_pb2.CONTAINER_STATE_RUNNING, listed
    print(f"ok: agent ListContainers: {mine[0].container_id} running on {listed.node_name}")

    services = deploy.ListServices(deploy_pb2.ListServicesRequest()).services
    service = next(s for s in services if s.name == name)
    assert ipaddress.ip_address(service.virtual_ip) in ipaddress.ip_network("10.96.0.0/16"), service
    assert [(p.name, p.port, p.target) for p in service.ports] == [("http", 80, 8080)], service
    assert [e.container_id for e in service.endpoints] == [mine[0].container_id], service
    print(f"ok: ListServices: {name} at {service.virtual_ip}, "
          f"endpoints {[e.ip for e in service.endpoints]}")

    try:
        deploy.Get(deploy_pb2.GetDeploymentRequest(name=name + "-missing"))
        raise AssertionError("Get of an unknown deployment succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    release_rpcs(channel, name, done)
    deploy.Delete(deploy_pb2.DeleteDeploymentRequest(name=name))
    print(f"ok: Delete: {name}")


def release_rpcs(channel, name, done):
    """ListReleases: the completed rollout's release serves in "default"; ListAudit: the
    Apply calls above (the refused one too), by "local" (no auth), seqs growing by one."""
    from berth.v1 import deploy_pb2, deploy_pb2_grpc

    releases = deploy_pb2_grpc.ReleaseServiceStub(channel)
    listed = releases.ListReleases(deploy_pb2.ListReleasesRequest(app=name))
    assert [r.id for r in listed.releases] == [done.release], (listed, done.release)
    assert done.release.startswith("r-") and len(done.release) == 18, done.release
    release = listed.releases[0]
    assert release.app == name and release.first_environment == "default", release
    assert release.image_digest == "", "a node-local image has no registry digest"
    [app] = listed.apps
    [serving] = app.environments
    assert (serving.environment, serving.release, serving.revision) == ("default", done.release, 1), serving
    assert serving.phase == deploy_pb2.ROLLOUT_PHASE_COMPLETE and serving.ready_replicas == 1, serving
    print(f"ok: ListReleases: {name} serves {done.release} in default")

    audit = releases.ListAudit(deploy_pb2.ListAuditRequest(app=name)).entries
    assert [e.action for e in audit] == ["apply", "apply"], audit
    refused, applied = audit
    assert refused.outcome.startswith("error: ") and "service_ports" in refused.outcome, refused
    assert applied.outcome == "ok" and applied.to_revision == 1, applied
    assert applied.seq == refused.seq + 1, audit
    assert all(e.who == "local" and e.environment == "default" for e in audit), audit
    assert applied.to_release == done.release, (applied, done.release)
    newest = releases.ListAudit(deploy_pb2.ListAuditRequest(app=name, limit=1)).entries
    assert [e.seq for e in newest] == [applied.seq], newest
    print(f"ok: ListAudit: {[(e.seq, e.action, e.outcome) for e in audit]}")


def audit_through(channel, name, what):
    """ListAudit on `channel` (a standby forwards it): the Delete of `name` is the last entry."""
    from berth.v1 import deploy_pb2, deploy_pb2_grpc

    releases = deploy_pb2_grpc.ReleaseServiceStub(channel)
    entries = releases.ListAudit(deploy_pb2.ListAuditRequest(app=name)).entries
    assert [(e.action, e.outcome) for e in entries][-1] == ("delete", "ok"), entries
    assert entries[-1].to_release == "" and entries[-1].from_release != "", entries[-1]
    print(f"ok: ListAudit through {what}: {len(entries)} entries")


def config_rpcs(channel, name):
    """CreateConfig then ListConfigs: a config's info carries the SHA-256 of its content."""
    from berth.v1 import deploy_pb2, deploy_pb2_grpc

    configs = deploy_pb2_grpc.ConfigServiceStub(channel)
    content = b"greeting = hello\n"
    created = configs.CreateConfig(deploy_pb2.PutFileRequest(name=name, data=content))
    assert created.version == 1, created
    assert created.sha256 == hashlib.sha256(content).hexdigest(), created
    listed = configs.ListConfigs(deploy_pb2.ListFilesRequest()).files
    mine = [f for f in listed if f.name == name]
    assert len(mine) == 1 and mine[0].size_bytes == len(content), listed
    try:
        configs.CreateConfig(deploy_pb2.PutFileRequest(name=name, data=content))
        raise AssertionError("CreateConfig of an existing name succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e
    print(f"ok: CreateConfig/ListConfigs: {name} version {created.version}")


def reflection_v1alpha(channel, wanted, what):
    """grpcio-reflection's client: services listed and a service's methods resolved."""
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert wanted <= services, f"{what}: v1alpha lists {services}, missing {wanted - services}"
    pool = descriptor_pool.DescriptorPool(db)
    api = sorted(s for s in wanted if s.startswith("berth.v1."))[0]
    methods = [m.name for m in pool.FindServiceByName(api).methods]
    assert methods, f"{what}: {api} has no methods through reflection"
    print(f"ok: reflection v1alpha on {what}: {sorted(services)}; {api}: {methods}")


def v1_messages():
    """grpc.reflection.v1's request and response types. The v1 protocol is v1alpha's,
    message for message and field for field, under another package: so its descriptor is
    grpcio-reflection's v1alpha one renamed."""
    file = descriptor_pb2.FileDescriptorProto()
    v1alpha_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = "grpc.reflection.v1"
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    for message in file.message_type:
        rename_fields(message)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    get = lambda n: message_factory.GetMessageClass(pool.FindMessageTypeByName(n))
    return get("grpc.reflection.v1.ServerReflectionRequest"), get(
        "grpc.reflection.v1.ServerReflectionResponse")


def rename_fields(message):
    for field in message.field:
        if field.type_name:
            field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
    for nested in message.nested_type:
        rename_fields(nested)


def reflection_v1(channel, wanted, what):
    """A raw stub of grpc.reflection.v1.ServerReflection: list services, then fetch the file
    that defines the daemon's API."""
    request, response = v1_messages()
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    api = sorted(s for s in wanted if s.startswith("berth.v1."))[0]
    replies = list(call(iter([
        request(list_services=""),
        request(file_containing_symbol=api),
    ]), timeout=10))
    assert len(replies) == 2, replies
    assert replies[0].WhichOneof("message_response") == "list_services_response", replies[0]
    services = {s.name for s in replies[0].list_services_response.service}
    assert wanted <= services, f"{what}: v1 lists {services}, missing {wanted - services}"
    files = replies[1].file_descriptor_response.file_descriptor_proto
    names = set()
    for raw in files:
        parsed = descriptor_pb2.FileDescriptorProto.FromString(raw)
        names.update(f"{parsed.package}.{s.name}" for s in parsed.service)
    assert api in names, f"{what}: the file for {api} defines {names}"
    print(f"ok: reflection v1 on {what}: {sorted(services)}; {api} resolved")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--out", required=True, help="where the generated stubs go")
    parser.add_argument("--scheduler", required=True, help="HOST:PORT")
    parser.add_argument("--agent", required=True, help="HOST:PORT")
    parser.add_argument("--standby", help="HOST:PORT of a standby scheduler (reflection only)")
    parser.add_argument("--image", required=True)
    parser.add_argument("--name", required=True, help="the deployment to create")
    args = parser.parse_args()

    generate(args.proto_dir, args.out)
    scheduler = grpc.insecure_channel(args.scheduler)
    agent = grpc.insecure_channel(args.agent)
    scheduler_rpcs(scheduler, agent, args.image, args.name)
    standby = grpc.insecure_channel(args.standby) if args.standby else scheduler
    config_rpcs(standby, args.name + "-conf")
    audit_through(standby, args.name, "a standby" if args.standby else "the scheduler")
    daemons = [(scheduler, SCHEDULER, "the scheduler"), (agent, AGENT, "the agent")]
    if args.standby:
        daemons.append((grpc.insecure_channel(args.standby), SCHEDULER, "a standby scheduler"))
    for channel, wanted, what in daemons:
        reflection_v1alpha(channel, wanted, what)
        reflection_v1(channel, wanted, what)
    print("ok: all")


if __name__ == "__main__":
    main()
