# The pure cgroup v2 guest's checks (tests/tests/guest_cgroup_v2.rs puts this after the guest
# harness's prelude in /init, and RUN_TESTS lines after it). TAP goes to the results port;
# the console keeps the full logs for a failure's diagnosis.
exec 3>"$BERTH_RESULTS" || { echo "berth-guest: no results port at $BERTH_RESULTS"; echo BERTH-GUEST-EXIT=1; poweroff -f; }
N=0
FAILED=0
ok() { N=$((N+1)); echo "ok - $*" >&3; }
notok() { N=$((N+1)); FAILED=$((FAILED+1)); echo "not ok - $*" >&3; }
# check DESCRIPTION COMMAND...: one TAP line; the command's output on failure.
check() {
  desc=$1; shift
  if "$@" >/tmp/check.out 2>&1; then ok "$desc"; else
    notok "$desc"; sed 's/^/# /' /tmp/check.out >&3; cat /tmp/check.out
  fi
}
echo "# guest kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s" >&3

mount -t cgroup2 none /sys/fs/cgroup
check "cgroup2 is the only cgroup hierarchy" sh -c '! grep -q " cgroup " /proc/self/mounts && grep -q " cgroup2 " /proc/self/mounts'
for c in cpu cpuset memory pids io hugetlb; do
  check "controller $c enabled at the root" sh -c "echo +$c > /sys/fs/cgroup/cgroup.subtree_control"
done

# run_tests NAME BINARY ARGS...: a libtest binary, one at a time, each test a TAP line.
run_tests() {
  name=$1; bin=$2; shift 2
  "$bin" --test-threads=1 "$@" >/tmp/$name.log 2>&1
  rc=$?
  sed -n -e "s/^test \(.*\) \.\.\. ok\$/ok - $name: \1/p" \
         -e "s/^test \(.*\) \.\.\. FAILED\$/not ok - $name: \1/p" /tmp/$name.log >/tmp/$name.tap
  N=$((N + $(wc -l </tmp/$name.tap)))
  FAILED=$((FAILED + $(grep -c '^not ok' /tmp/$name.tap)))
  cat /tmp/$name.tap >&3
  if [ "$rc" = 0 ] && [ -s /tmp/$name.tap ]; then ok "$name exited 0"; else
    notok "$name exited $rc"
    tail -n 60 /tmp/$name.log | sed 's/^/# /' >&3
    echo "==== $name log ===="; cat /tmp/$name.log
  fi
}

# cycle RUNTIME ID: create, start, kill and delete the /bin/true container of /bundle once.
cycle() {
  $1 create --bundle /bundle $2 </dev/null >/dev/null 2>>/tmp/lc.err || return 1
  $1 start $2 2>>/tmp/lc.err || return 1
  $1 kill $2 KILL 2>/dev/null
  $1 delete --force $2 2>>/tmp/lc.err
}

# lifecycles BERTH_RUNTIME N: N cycles of berth-runtime and of crun, alternating so that the
# host's load falls on both alike; ms per cycle of each from /proc/uptime (centiseconds:
# busybox date has no nanoseconds).
lifecycles() {
  rt=$1; n=$2; i=0; tb=0; tc=0
  rm -f /tmp/lc.err
  # Warm the page cache for both.
  if ! cycle "$rt" lc-warm || ! cycle crun lc-warm; then
    notok "lifecycle of /bin/true under berth-runtime and crun"; sed 's/^/# /' /tmp/lc.err >&3
    cat /tmp/lc.err; return
  fi
  while [ $i -lt $n ]; do
    t0=$(cut -d' ' -f1 /proc/uptime)
    cycle "$rt" lc-$i || break
    t1=$(cut -d' ' -f1 /proc/uptime)
    cycle crun lc-$i || break
    t2=$(cut -d' ' -f1 /proc/uptime)
    tb=$(awk "BEGIN { print $tb + $t1 - $t0 }"); tc=$(awk "BEGIN { print $tc + $t2 - $t1 }")
    i=$((i+1))
  done
  if [ $i -lt $n ]; then
    notok "lifecycle of /bin/true under berth-runtime and crun (cycle $i)"
    sed 's/^/# /' /tmp/lc.err >&3; cat /tmp/lc.err; return
  fi
  ok "lifecycle of /bin/true under berth-runtime and crun, $n cycles each"
  echo "# lifecycle berth-runtime ms_per_cycle=$(awk "BEGIN { printf \"%d\", $tb * 1000 / $n }")" >&3
  echo "# lifecycle crun ms_per_cycle=$(awk "BEGIN { printf \"%d\", $tc * 1000 / $n }")" >&3
}
