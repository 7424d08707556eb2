"""The shop's pipeline (pipeline.sh) as a pipeline in another language would run it: images are
built, tested, linted and pushed with the berth CLI, and every deployment step goes through
berth's gRPC API with stubs generated from proto/ by grpcio-tools:
EnvironmentService.CreateEnvironment, DeploymentService.Apply (with an environment) and Watch,
ReleaseService.Promote, DeploymentService.Approve, ReleaseService.ListReleases and ListAudit.

It runs against a cluster and a registry that exist (--scheduler, --registry, or
$BERTH_SCHEDULER and $REGISTRY as with-cluster.sh sets them), which pipeline.sh would start. Needs the packages of tests/python/requirements.txt
(grpcio, grpcio-tools, protobuf). Any failure raises: the exit status is non-zero and the last
line names the step.

  python3 examples/pipeline/pipeline.py --scheduler 127.0.0.1:7700 --registry 127.0.0.1:5000
  bash examples/pipeline/with-cluster.sh PYTHON examples/pipeline/pipeline.py
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
SERVICES = ["db", "api", "web"]
PROMOTED = ["api", "web"]  # db is per environment: its volume holds that environment's data

# The stub generation step of tests/python/berth_client.py, reused.
sys.path.insert(0, os.path.join(TOP, "tests", "python"))
from berth_client import generate  # noqa: E402


class StepFailed(Exception):
    pass


STEP = ["setup"]


def step(name, what):
    STEP[0] = name
    print(f"\n=== [{name}] {what}", flush=True)


def check(cond, message):
    if not cond:
        raise StepFailed(message)


# --- the berth CLI, for building and pushing ----------------------------------------------------

def berth(args, ctx, capture=False):
    cmd = [ctx.berth] + args
    print("+ berth " + " ".join(args), flush=True)
    env = dict(os.environ, BERTH_SCHEDULER=ctx.scheduler_url)
    out = subprocess.run(cmd, env=env, text=True,
                         stdout=subprocess.PIPE if capture else None)
    check(out.returncode == 0, f"berth {' '.join(args)} exited with {out.returncode}")
    return out.stdout


# --- specs: the same TOML files pipeline.sh deploys ---------------------------------------------

def spec_from_toml(path, image, env_name, pb, types):
    """A DeploymentSpec from one of specs/*.toml (the keys those files use; others refused)."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    known = {"name", "image", "plain_http", "replicas", "cpu", "memory", "env", "ports",
             "service_ports", "volumes", "readiness", "liveness", "restart", "rollout"}
    unknown = set(raw) - known
    check(not unknown, f"{path}: keys this client does not translate: {sorted(unknown)}")
    spec = pb.DeploymentSpec(name=raw["name"], image=image, replicas=raw.get("replicas", 1),
                             env=raw.get("env", {}), environment=env_name)
    spec.image_source.reference = image
    spec.image_source.pull.plain_http = raw.get("plain_http", False)
    spec.resources.cpu_millis = cpu_millis(raw.get("cpu", 0))
    spec.resources.memory_bytes = memory_bytes(raw.get("memory", 0))
    for p in raw.get("ports", []):
        spec.ports.add(host_port=p.get("host", 0), container_port=p["container"])
    for p in raw.get("service_ports", []):
        spec.service_ports.add(name=p.get("name", ""), port=p["port"],
                               target=p.get("target", p["port"]))
    for v in raw.get("volumes", []):
        # Volumes are named cluster-wide: each environment gets its own (as pipeline.sh does).
        spec.volumes.add(name=f"{v['name']}-{env_name or 'default'}", path=v["path"],
                         read_only=v.get("read_only", False))
    for which in ("readiness", "liveness"):
        if which in raw:
            getattr(spec, which).CopyFrom(probe(raw[which], types))
    if "restart" in raw:
        kinds = {"always": types.RestartPolicy.KIND_ALWAYS,
                 "on-failure": types.RestartPolicy.KIND_ON_FAILURE,
                 "never": types.RestartPolicy.KIND_NEVER}
        spec.restart.kind = kinds[raw["restart"]]
    rollout = raw.get("rollout", {})
    if "max_surge" in rollout:
        spec.rollout.max_surge = str(rollout["max_surge"])
    if "max_unavailable" in rollout:
        spec.rollout.max_unavailable = str(rollout["max_unavailable"])
    if "progress_deadline" in rollout:
        spec.rollout.progress_deadline_s = seconds(rollout["progress_deadline"])
    return spec


def cpu_millis(v):
    if isinstance(v, str) and v.endswith("m"):
        return int(v[:-1])
    return int(float(v) * 1000)


def memory_bytes(v):
    if isinstance(v, int):
        return v
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(v[:-1]) * units[v[-1].lower()]


def seconds(v):
    if isinstance(v, int):
        return v
    check(v.endswith("s") and not v.endswith("ms"), f"duration {v!r}: this client reads only '90s'")
    return int(v[:-1])


def probe(raw, types):
    p = types.Probe(period_ms=raw.get("period_ms", 0), timeout_ms=raw.get("timeout_ms", 0),
                    failure_threshold=raw.get("failure_threshold", 0),
                    initial_delay_ms=raw.get("initial_delay_ms", 0))
    if "http" in raw:
        p.http.port, p.http.path = raw["http"], raw.get("path", "/")
    elif "tcp" in raw:
        p.tcp.port = raw["tcp"]
    else:
        p.exec.command.extend(raw["exec"])
    return p


# --- the gRPC steps ---------------------------------------------------------------------------

class Api:
    def __init__(self, target):
        from berth.v1 import deploy_pb2, deploy_pb2_grpc, types_pb2
        self.pb, self.types = deploy_pb2, types_pb2
        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=30)
        self.deploy = deploy_pb2_grpc.DeploymentServiceStub(channel)
        self.envs = deploy_pb2_grpc.EnvironmentServiceStub(channel)
        self.releases = deploy_pb2_grpc.ReleaseServiceStub(channel)

    def phase(self, p):
        return self.pb.RolloutPhase.Name(p).removeprefix("ROLLOUT_PHASE_")

    def ensure_env(self, name, approval):
        env = self.pb.Environment(name=name, approval=approval)
        try:
            self.envs.CreateEnvironment(self.pb.CreateEnvironmentRequest(environment=env))
            print(f"{name}: created")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.ALREADY_EXISTS, f"CreateEnvironment {name}: {e.details()}")
            print(f"{name}: exists")

    def watch(self, name, env, stop_at_approval=False, timeout=300):
        """Follows the rollout to its final event; returns that event's phase name."""
        req = self.pb.WatchRequest(name=name, environment=env, stop_at_approval=stop_at_approval)
        last = None
        for ev in self.deploy.Watch(req, timeout=timeout):
            print(f"  {env}/{name} revision {ev.revision}: {self.phase(ev.phase)}, "
                  f"{ev.ready_replicas}/{ev.replicas} ready, {ev.updated_replicas} updated "
                  f"{ev.message}".rstrip(), flush=True)
            last = ev
            if ev.final:
                break
        check(last is not None and last.final, f"Watch {env}/{name} ended without a final event")
        return self.phase(last.phase)

    def apply(self, spec):
        reply = self.deploy.Apply(self.pb.ApplyRequest(spec=spec))
        d = reply.deployment
        print(f"{spec.environment}/{spec.name}: revision {d.revision} "
              f"{'applied' if reply.changed else 'unchanged'}")
        return d

    def serving(self):
        """{(app, environment): release id} from ListReleases."""
        listed = self.releases.ListReleases(self.pb.ListReleasesRequest())
        return {(a.app, s.environment): s.release for a in listed.apps for s in a.environments}


def build_test_push(ctx):
    step("build", f"berth build of {' '.join(SERVICES)} (version {ctx.version})")
    for s in SERVICES:
        berth(["build", "-f", f"{HERE}/{s}/Containerfile", "-t", f"shop/{s}:{ctx.version}",
               "--build-arg", f"VERSION={ctx.version}", f"{HERE}/{s}"], ctx)
    step("unit", "unit tests inside the images")
    for s in ["api", "web"]:
        # --network host: `berth run --network none` leaves loopback down (see pipeline.sh).
        berth(["run", "--rm", "--network", "host", f"shop/{s}:{ctx.version}",
               "python3", "-m", "unittest", "-v"], ctx)
    step("lint", "pyflakes inside the images")
    for s in ["api", "web"]:
        berth(["run", "--rm", f"shop/{s}:{ctx.version}", "python3", "-m", "pyflakes", "/app"], ctx)
    step("push", f"berth image push to {ctx.registry}")
    images = {}
    for s in SERVICES:
        ref = f"{ctx.registry}/shop/{s}:{ctx.version}"
        berth(["image", "tag", f"shop/{s}:{ctx.version}", ref], ctx)
        pushed = json.loads(berth(["image", "push", ref, "--plain-http", "-o", "json"], ctx, True))
        check(pushed["digest"].startswith("sha256:"), f"push {ref}: no digest in {pushed}")
        images[s] = f"{ctx.registry}/shop/{s}@{pushed['digest']}"
        print(f"{s}: {images[s]}")
    return images


def integration(ctx, api, env):
    """Through `berth exec` in a web replica (the API's exec is the agent's stream): plain `api`
    is this environment's api, and an order through web lands in its redis."""
    listed = api.deploy.ListContainers(
        api.pb.ListClusterContainersRequest(deployment="web", environment=env)).containers
    running = [c for c in listed if c.status.state == api.types.CONTAINER_STATE_RUNNING]
    check(running, f"no running web replica in {env}")
    node = running[0].node
    agent = next(n.agent_endpoint for n in api.deploy.ListNodes(api.pb.ListNodesRequest()).nodes
                 if n.name == node)

    def in_web(*cmd):
        return berth(["exec", "--agent", agent, running[0].status.container_id, *cmd], ctx, True)

    plain = in_web("getent", "hosts", "api").split()[:1]
    qualified = in_web("getent", "hosts", f"api.{env}.berth").split()[:1]
    check(plain and plain == qualified, f"in {env}: api is {plain}, api.{env}.berth {qualified}")
    before = json.loads(in_web("curl", "-fsS", "--max-time", "5", "http://api:8080/"))
    check(before["version"] == ctx.version, f"{env}'s api reports {before['version']}")
    page = in_web("curl", "-fsS", "--max-time", "5", "-L", "--data", "", "http://web:8080/order")
    after = json.loads(in_web("curl", "-fsS", "--max-time", "5", "http://api:8080/"))
    check(after["orders"] == before["orders"] + 1, f"{env}: the order was not counted: {after}")
    check(f"<p>api: {ctx.version}</p>" in page, f"{env}'s page does not show the api version")
    print(f"integration ({env}): ok, api {plain[0]}, orders {before['orders']} -> {after['orders']}")


def deliver(ctx, api, images):
    pb = api.pb
    step("envs", f"environments {ctx.staging} (auto) and {ctx.production} (manual)")
    api.ensure_env(ctx.staging, pb.APPROVAL_AUTO)
    api.ensure_env(ctx.production, pb.APPROVAL_MANUAL)

    step("staging", f"Apply + Watch in {ctx.staging}")
    for s in SERVICES:
        spec = spec_from_toml(f"{HERE}/specs/{s}.toml", images[s], ctx.staging, pb, api.types)
        api.apply(spec)
        phase = api.watch(s, ctx.staging)
        check(phase == "COMPLETE", f"{ctx.staging}/{s}: rollout ended {phase}")

    step("integration", f"integration tests against {ctx.staging}")
    integration(ctx, api, ctx.staging)

    step("promote", f"Promote {' '.join(PROMOTED)} to {ctx.production} (stops at approval)")
    db = spec_from_toml(f"{HERE}/specs/db.toml", images["db"], ctx.production, pb, api.types)
    api.apply(db)
    api.watch("db", ctx.production, stop_at_approval=True)
    for s in PROMOTED:
        reply = api.releases.Promote(pb.PromoteRequest(
            app=s, from_environment=ctx.staging, to_environment=ctx.production))
        print(f"{s}: release {reply.release.id} ({reply.release.image}) -> {ctx.production}, "
              f"revision {reply.deployment.revision}")
        phase = api.watch(s, ctx.production, stop_at_approval=True)
        # COMPLETE: production approves automatically, or already ran this release.
        check(phase in ("AWAITING_APPROVAL", "COMPLETE"), f"{ctx.production}/{s}: rollout ended {phase}")

    step("approve", f"Approve in {ctx.production}")
    for s in ["db"] + PROMOTED:
        d = api.deploy.Get(pb.GetDeploymentRequest(name=s, environment=ctx.production))
        if d.phase == pb.ROLLOUT_PHASE_AWAITING_APPROVAL:
            api.deploy.Approve(pb.ApproveRequest(name=s, environment=ctx.production))
        phase = api.watch(s, ctx.production)
        check(phase == "COMPLETE", f"{ctx.production}/{s}: rollout ended {phase}")

    step("verify", f"{ctx.production} serves the releases {ctx.staging} tested")
    serving = api.serving()
    for s in PROMOTED:
        staged, produced = serving.get((s, ctx.staging)), serving.get((s, ctx.production))
        check(staged and staged == produced, f"{s}: {ctx.production} runs {produced}, {ctx.staging} {staged}")
        print(f"{s}: release {produced} in {ctx.staging} and {ctx.production}")
    integration(ctx, api, ctx.production)

    step("report", "ListReleases and ListAudit")
    listed = api.releases.ListReleases(pb.ListReleasesRequest())
    for r in listed.releases:
        print(f"release {r.id} {r.app} {r.image} first in {r.first_environment}")
    for a in listed.apps:
        for s in a.environments:
            print(f"  {a.app} in {s.environment}: {s.release} ({api.phase(s.phase)})")
    audit = api.releases.ListAudit(pb.ListAuditRequest(limit=30)).entries
    for e in audit:
        print(f"audit {e.seq} {e.who} {e.action} {e.environment}/{e.app} "
              f"{e.from_release or '-'} -> {e.to_release or '-'} {e.outcome} {e.detail}".rstrip())
    return serving, audit


def main():
    env = os.environ.get
    scheduler = env("BERTH_SCHEDULER", "").removeprefix("http://")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scheduler", default=scheduler or None, required=not scheduler,
                   help="HOST:PORT of berth-scheduler, no TLS (default: $BERTH_SCHEDULER)")
    p.add_argument("--registry", default=env("REGISTRY"), required=not env("REGISTRY"),
                   help="HOST:PORT of a plain-HTTP registry (default: $REGISTRY)")
    p.add_argument("--berth", default=env("BERTH", os.path.join(TOP, "target/release/berth")))
    p.add_argument("--staging", default=env("STAGING", "staging"))
    p.add_argument("--production", default=env("PRODUCTION", "production"))
    p.add_argument("--version", default=env("VERSION", "v1"), help="baked into the images")
    p.add_argument("--proto-dir", default=os.path.join(TOP, "proto/proto"))
    p.add_argument("--results", help="write the outcome (serving releases, audit) here as JSON")
    ctx = p.parse_args()
    ctx.scheduler_url = f"http://{ctx.scheduler}"
    try:
        with tempfile.TemporaryDirectory(prefix="berth-pipeline-stubs-") as stubs:
            generate(ctx.proto_dir, stubs)
            api = Api(ctx.scheduler)
            images = build_test_push(ctx)
            serving, audit = deliver(ctx, api, images)
            if ctx.results:
                from google.protobuf.json_format import MessageToDict
                with open(ctx.results, "w") as f:
                    json.dump({"images": images,
                               "serving": [{"app": a, "environment": e, "release": r}
                                           for (a, e), r in sorted(serving.items())],
                               "audit": [MessageToDict(e) for e in audit]}, f, indent=1)
    except (StepFailed, grpc.RpcError) as e:
        detail = e.details() if isinstance(e, grpc.RpcError) else str(e)
        print(f"pipeline.py: step \"{STEP[0]}\" failed: {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"\npipeline.py: done ({' '.join(SERVICES)} {ctx.version}: {ctx.staging} tested, "
          f"{ctx.production} approved and serving)")


if __name__ == "__main__":
    main()
