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

# lifecycle RUNTIME N: create, start, kill and delete /bin/true N times; ms per cycle (from
# /proc/uptime, in centiseconds: busybox date has no nanoseconds).
lifecycle() {
  rt=$1; n=$2; i=0
  t0=$(cut -d' ' -f1 /proc/uptime)
  while [ $i -lt $n ]; do
    $rt create --bundle /bundle lc-$i </dev/null >/dev/null 2>/tmp/lc.err || return 1
    $rt start lc-$i 2>>/tmp/lc.err || return 1
    $rt kill lc-$i KILL 2>/dev/null
    $rt delete --force lc-$i 2>>/tmp/lc.err || return 1
    i=$((i+1))
  done
  t1=$(cut -d' ' -f1 /proc/uptime)
  awk "BEGIN { printf \"%d\", ($t1 - $t0) * 1000 / $n }"
}

lifecycle_row() {
  label=$1; rt=$2
  rm -f /tmp/lc.err
  lifecycle "$rt" 1 >/dev/null  # warm the page cache
  if ms=$(lifecycle "$rt" 10); then
    ok "lifecycle of /bin/true under $label"; echo "# lifecycle $label ms_per_cycle=$ms" >&3
  else
    notok "lifecycle of /bin/true under $label"; sed 's/^/# /' /tmp/lc.err >&3; cat /tmp/lc.err
  fi
}
