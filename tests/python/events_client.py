"""The event stream from Python, as a monitoring script in another language would read it.

Generates stubs from proto/ (berth_client.generate), reads every kept event (EventService.Events
without follow), checks they are numbered 1, 2, 3, ... with no gap, resumes from the middle and
gets exactly the rest, then follows: a new event (a refused Delete, which is audited) arrives
live with the next revision. A revision ahead of the log is refused with INVALID_ARGUMENT.
Any failure raises, so the exit status is non-zero. Driven by tests/tests/events.rs.
"""

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from berth_client import generate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--out", required=True, help="where the generated stubs go")
    parser.add_argument("--scheduler", required=True, help="HOST:PORT")
    args = parser.parse_args()
    generate(args.proto_dir, args.out)
    from berth.v1 import deploy_pb2, deploy_pb2_grpc, events_pb2, events_pb2_grpc

    channel = grpc.insecure_channel(args.scheduler)
    events = events_pb2_grpc.EventServiceStub(channel)
    kept = list(events.Events(events_pb2.EventsRequest()))
    revisions = [e.revision for e in kept]
    assert revisions == list(range(1, len(kept) + 1)), revisions[:20]
    print(f"ok: {len(kept)} kept events, numbered without gaps")

    mid = len(kept) // 2
    rest = list(events.Events(events_pb2.EventsRequest(since_revision=mid)))
    assert rest == kept[mid:], "resuming from the middle gives exactly the rest"
    print(f"ok: resumed after {mid}")

    stream = events.Events(events_pb2.EventsRequest(since_revision=len(kept), follow=True))
    deploy = deploy_pb2_grpc.DeploymentServiceStub(channel)
    try:
        deploy.Delete(deploy_pb2.DeleteDeploymentRequest(name="python-ghost"))
        raise AssertionError("deleting a deployment that does not exist succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    live = next(stream)
    assert live.revision == len(kept) + 1, live
    assert live.kind == events_pb2.EVENT_KIND_AUDIT and "python-ghost" in live.message, live
    stream.cancel()
    print(f"ok: followed live event {live.revision}: {live.message}")

    try:
        list(events.Events(events_pb2.EventsRequest(since_revision=10**9)))
        raise AssertionError("a revision ahead of the log was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "ahead of the event log" in e.details(), e.details()
    print("ok: a revision ahead of the log is refused")


if __name__ == "__main__":
    main()
