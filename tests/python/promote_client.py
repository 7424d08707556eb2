"""Environments and promotion from Python, as a pipeline in another language would drive them.

Generates stubs from proto/ (berth_client.generate), creates a staging environment (automatic)
and a production one (manual approval), applies a spec to staging and waits for it, then calls
ReleaseService.Promote: production waits for approval with the release staging runs, Approve
completes it with the same release id, and Promote's refusals name what was wrong. Any failure
raises, so the exit status is non-zero. Driven by tests/tests/environments.rs.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_client import generate, until  # noqa: E402


def refused(call, code, words):
    """call() must fail with `code`, its message containing `words`."""
    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == code, f"{e.code()}: {e.details()}"
        assert words in e.details(), e.details()
        return e.details()
    raise AssertionError(f"no {code} for a call that should fail with {words!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--out", required=True, help="where the generated stubs go")
    parser.add_argument("--scheduler", required=True, help="HOST:PORT")
    parser.add_argument("--name", required=True, help="the app to deploy and promote")
    args = parser.parse_args()
    generate(args.proto_dir, args.out)
    from berth.v1 import deploy_pb2, deploy_pb2_grpc, types_pb2

    channel = grpc.insecure_channel(args.scheduler)
    envs = deploy_pb2_grpc.EnvironmentServiceStub(channel)
    deploy = deploy_pb2_grpc.DeploymentServiceStub(channel)
    releases = deploy_pb2_grpc.ReleaseServiceStub(channel)

    envs.CreateEnvironment(deploy_pb2.CreateEnvironmentRequest(
        environment=deploy_pb2.Environment(name="staging")))
    envs.CreateEnvironment(deploy_pb2.CreateEnvironmentRequest(
        environment=deploy_pb2.Environment(name="production",
                                           approval=deploy_pb2.APPROVAL_MANUAL)))
    listed = [e.name for e in envs.ListEnvironments(deploy_pb2.ListEnvironmentsRequest()).environments]
    assert listed == ["default", "production", "staging"], listed
    print(f"ok: CreateEnvironment/ListEnvironments: {listed}")

    spec = deploy_pb2.DeploymentSpec(
        name=args.name, image="py-promote:1", replicas=2, environment="staging",
        resources=types_pb2.Resources(cpu_millis=100, memory_bytes=32 << 20))
    deploy.Apply(deploy_pb2.ApplyRequest(spec=spec))

    def complete(env):
        d = deploy.Get(deploy_pb2.GetDeploymentRequest(name=args.name, environment=env))
        return d if d.phase == deploy_pb2.ROLLOUT_PHASE_COMPLETE and d.ready_replicas == 2 else None

    staging = until("staging complete", 60, lambda: complete("staging"))
    assert staging.environment == "staging" and staging.spec.name == args.name, staging
    assert staging.release.startswith("r-"), staging
    print(f"ok: Apply to staging: release {staging.release}")

    reply = releases.Promote(deploy_pb2.PromoteRequest(
        app=args.name, from_environment="staging", to_environment="production"))
    assert reply.changed, reply
    assert reply.release.id == staging.release, (reply.release.id, staging.release)
    assert reply.release.image == staging.spec.image, reply.release
    assert reply.deployment.phase == deploy_pb2.ROLLOUT_PHASE_AWAITING_APPROVAL, reply.deployment
    assert reply.deployment.environment == "production", reply.deployment
    print(f"ok: Promote: production awaits approval for {reply.release.id}")

    deploy.Approve(deploy_pb2.ApproveRequest(name=args.name, environment="production"))
    production = until("production complete", 60, lambda: complete("production"))
    assert production.release == staging.release, (production.release, staging.release)
    print(f"ok: Approve: production runs {production.release}")

    bogus = "r-0000000000000000"
    refused(lambda: releases.Promote(deploy_pb2.PromoteRequest(
        app=args.name, from_environment="staging", to_environment="production", release=bogus)),
        grpc.StatusCode.FAILED_PRECONDITION, f"release {bogus} never completed in staging")
    refused(lambda: releases.Promote(deploy_pb2.PromoteRequest(
        app=args.name, from_environment="staging", to_environment="prod")),
        grpc.StatusCode.NOT_FOUND, 'environment "prod" does not exist')
    refused(lambda: releases.Promote(deploy_pb2.PromoteRequest(
        app="nope", from_environment="staging", to_environment="production")),
        grpc.StatusCode.NOT_FOUND, "nope")
    print("ok: Promote refusals")
    print("ok: all")


if __name__ == "__main__":
    main()
