#!/usr/bin/env bash
# The event stream (issue 17), on a real berth-scheduler (redb store in a temp dir on /tmp)
# and the real `berth`:
#   1. delay: an audited call's event, from its publish time (Event.at_ms, stamped when the
#      scheduler publishes it) to the line `berth events --follow -o json` prints (p50/p95/max);
#   2. resume: a follower killed (SIGKILL) after every few events while events keep coming,
#      restarted with `--since` the last revision it printed; the union of what it printed is
#      compared with the log: events lost and shown twice (both must be 0).
# Uses the binaries in $BERTH_BIN_DIR (default target/debug: build them with
# `cargo build -p berth-scheduler -p berth-cli`); say which in the figures you report.
#   usage: bash benches/events.sh
#   env:   BENCH_EVENTS_N=200 (events timed)  BENCH_RESUME_CYCLES=20  BENCH_OUT=target/bench/events.json
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${BERTH_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}
export BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/events.json}
. "$HERE/lib.sh"
for b in berth berth-scheduler; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: cargo build -p berth-scheduler -p berth-cli" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "python3 missing: run scripts/setup.sh" >&2; exit 1; }

W=$(mktemp -d /tmp/berth-bench-events.XXXXXX)
SCHED_PID=
cleanup() {
    [ -n "$SCHED_PID" ] && kill "$SCHED_PID" 2>/dev/null && wait "$SCHED_PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
PORT=$(bench_free_port)
ADDR=127.0.0.1:$PORT
"$BIN/berth-scheduler" --listen "$ADDR" --data-dir "$W" >"$W/scheduler.log" 2>&1 &
SCHED_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

BERTH="$BIN/berth" ADDR=$ADDR python3 - <<'PY'
import json, os, signal, statistics, subprocess, threading, time

berth, addr = os.environ["BERTH"], os.environ["ADDR"]
n = int(os.environ.get("BENCH_EVENTS_N", "200"))
cycles = int(os.environ.get("BENCH_RESUME_CYCLES", "20"))
env = dict(os.environ, BERTH_SCHEDULER=addr)


def refused_delete(name):
    """An audited call (the deployment does not exist): exactly one event."""
    r = subprocess.run([berth, "delete", name], env=env, capture_output=True)
    assert r.returncode != 0 and b"not found" in r.stderr, r


def follower(since):
    return subprocess.Popen([berth, "events", "--follow", "-o", "json", "--since", str(since)],
                            env=env, stdout=subprocess.PIPE, text=True, bufsize=1)


# 1. delay
f = follower(0)
delays, seen = [], threading.Event()
def read():
    got = 0
    for line in f.stdout:
        e = json.loads(line)
        if "bench-delay-" in e["message"]:
            delays.append(time.time() * 1000 - e["at_ms"])
            got += 1
            if got == n:
                seen.set()
                return
threading.Thread(target=read, daemon=True).start()
time.sleep(0.5)
for i in range(n):
    refused_delete(f"bench-delay-{i}")
assert seen.wait(60), f"only {len(delays)} of {n} events arrived"
f.kill()
delays.sort()
q = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))]
delay = {"n": n, "p50_ms": q(0.5), "p95_ms": q(0.95), "max_ms": delays[-1],
         "mean_ms": statistics.mean(delays)}

# 2. resume: kill the follower every few events while a writer keeps going
stop = threading.Event()
def writer():
    i = 0
    while not stop.is_set():
        refused_delete(f"bench-resume-{i}")
        i += 1
w = threading.Thread(target=writer, daemon=True)
w.start()
shown, last = [], 0
for c in range(cycles):
    f = follower(last)
    for _ in range(3 + c % 5):
        e = json.loads(f.stdout.readline())
        shown.append(e["revision"])
        last = e["revision"]
    f.send_signal(signal.SIGKILL)
    f.wait()
stop.set()
w.join()
listed = json.loads(subprocess.run([berth, "events", "-o", "json"], env=env,
                                   capture_output=True, check=True).stdout)
log = [e["revision"] for e in listed if e["revision"] <= last]
lost = len(set(log) - set(shown))
dup = len(shown) - len(set(shown))
resume = {"cycles": cycles, "events_shown": len(shown), "lost": lost, "shown_twice": dup,
          "in_order": shown == sorted(shown)}

result = {"delay": delay, "resume": resume, "loadavg": open("/proc/loadavg").read().split()[:3]}
os.makedirs(os.path.dirname(os.environ["BENCH_OUT"]), exist_ok=True)
with open(os.environ["BENCH_OUT"], "w") as out:
    json.dump(result, out, indent=2)
print(f"publish -> berth events --follow line, {n} events: p50 {delay['p50_ms']:.1f} ms, "
      f"p95 {delay['p95_ms']:.1f} ms, max {delay['max_ms']:.1f} ms")
print(f"resume: {cycles} kill -9 + --since cycles, {len(shown)} events shown: "
      f"lost {lost}, shown twice {dup}, in order {resume['in_order']}")
print(f"load average after: {' '.join(result['loadavg'])}")
assert lost == 0 and dup == 0 and resume["in_order"]
PY
