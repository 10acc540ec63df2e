#!/bin/sh
# The VM backend's end-to-end cases, run by /init inside the nested test host against real
# libkrun microVMs (`--isolation vm`). Each case reports one `VMTEST PASS name` or
# `VMTEST FAIL name: why` line on $VMTEST_OUT; the evidence (full outputs) goes to stdout, the test
# host's console. Arguments: the case names to run (default: all, in order; later cases use the
# sandbox `vt` that `create` makes).
# Figures printed here come from software emulation (QEMU TCG): never performance numbers.
out=${VMTEST_OUT:-/dev/stdout}
w=/tmp/vt
mkdir -p "$w"

report() { echo "VMTEST $*" >"$out"; }
pass() {
  echo "== PASS $1"
  report "PASS $1"
}
fail() {
  echo "== FAIL $1: $2"
  report "FAIL $1: $2"
  # Evidence: each sandbox's state and the tails of its logs (the guest console is
  # logs/kernel.log; moat's own messages are the system source).
  for d in "${MOAT_HOME:-/tmp/moat}"/sandboxes/*; do
    [ -d "$d" ] || continue
    n=${d##*/}
    echo "--- moat inspect $n (status, stop_reason, exit_code)"
    moat inspect "$n" 2>&1 | grep -E '"(status|stop_reason|exit_code)"'
    echo "--- moat logs $n --source system --tail 10"
    moat logs "$n" --source system --tail 10 2>&1 | cut -c1-300
    for f in "$d"/sandbox.log "$d"/logs/*; do
      [ -f "$f" ] || continue
      echo "--- tail of $f"
      tail -n 15 "$f" | cut -c1-300
    done
  done
}
figure() {
  echo "== figure: $*"
  report "INFO software-emulated (TCG), not performance: $*"
}
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
# The last non-empty line of a file, on one line, for a failure message.
last() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1 | tr -d '\r' | cut -c1-300; }
# Show a command's captured output on the console as evidence.
show() {
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "--- $f"
    tail -n 40 "$f"
  done
}
# A sandbox's status, from `moat inspect`.
status_of() {
  moat inspect "$1" 2>/dev/null | sed -n 's/^ *"status": "\([a-z]*\)".*/\1/p' | head -n 1
}
pid_of() {
  moat inspect "$1" 2>/dev/null | sed -n 's/^ *"pid": \([0-9]*\).*/\1/p' | head -n 1
}
# Run "$@" with a time limit, stdout to $w/$name.out, stderr to $w/$name.err; sets rc and ms.
run() {
  name=$1
  limit=$2
  shift 2
  echo "\$ $*"
  t0=$(now_ms)
  # moat forwards SIGTERM to its sandbox: SIGKILL follows 10 s later if it is still there.
  timeout -k 10 "$limit" "$@" >"$w/$name.out" 2>"$w/$name.err"
  rc=$?
  ms=$(($(now_ms) - t0))
  echo "(exit $rc after $ms ms)"
  if [ "$ms" -ge $((limit * 1000)) ]; then
    echo "(timed out after ${limit} s; processes left:)"
    ps | grep -v ' \[' | tail -n 20
    echo "timed out after ${limit} s" >>"$w/$name.err"
  fi
  show "$w/$name.out" "$w/$name.err"
}
vm_ready=no

case_kvm() {
  if [ -c /dev/kvm ] && grep -q '^kvm_amd ' /proc/modules; then
    pass kvm
  else
    dmesg | grep -i -E 'kvm|svm' | tail -n 10
    fail kvm "no /dev/kvm with kvm_amd loaded in the test host: $(dmesg | grep -i kvm | tail -n 1)"
  fi
}

case_doctor() {
  run doctor 60 moat doctor
  if grep -q '^microVM: this host can boot one' "$w/doctor.out"; then
    pass doctor
  else
    fail doctor "moat doctor does not say a microVM can boot: $(grep FAIL "$w/doctor.out" | head -n 2 | tr '\n' ' ')"
  fi
}

case_run_echo() {
  run run_echo 120 moat run --isolation vm -- echo hello
  if [ "$rc" = 0 ] && [ "$(cat "$w/run_echo.out")" = hello ]; then
    vm_ready=yes
    pass run_echo
    figure "moat run --isolation vm -- echo hello, start to exit: $ms ms"
  else
    fail run_echo "exit $rc, stdout '$(head -c 80 "$w/run_echo.out")', stderr: $(last "$w/run_echo.err")"
  fi
}

case_exit_code() {
  run exit_code 120 moat run --isolation vm -- sh -c 'exit 7'
  if [ "$rc" = 7 ]; then
    pass exit_code
  else
    fail exit_code "expected exit 7, got $rc; stderr: $(last "$w/exit_code.err")"
  fi
}

case_stdin_cat() {
  echo "\$ echo x | moat run --isolation vm -- cat"
  t0=$(now_ms)
  echo x | timeout -k 10 120 moat run --isolation vm -- cat >"$w/stdin_cat.out" 2>"$w/stdin_cat.err"
  rc=$?
  echo "(exit $rc after $(($(now_ms) - t0)) ms)"
  show "$w/stdin_cat.out" "$w/stdin_cat.err"
  if [ "$rc" = 0 ] && [ "$(cat "$w/stdin_cat.out")" = x ]; then
    pass stdin_cat
  else
    fail stdin_cat "exit $rc, stdout '$(head -c 80 "$w/stdin_cat.out")', stderr: $(last "$w/stdin_cat.err")"
  fi
}

case_rootfs() {
  run rootfs 120 moat run --isolation vm --rootfs /opt/rootfs -- cat /etc/moat-test-marker
  if [ "$rc" = 0 ] && [ "$(cat "$w/rootfs.out")" = "moat vm-host test rootfs" ]; then
    pass rootfs
  else
    fail rootfs "exit $rc, stdout '$(head -c 80 "$w/rootfs.out")', stderr: $(last "$w/rootfs.err")"
  fi
}

# After the ephemeral `moat run`s: nothing of theirs may be left running (a leftover VM would also
# hold its guest RAM; the test host's memory is printed as evidence).
case_leftovers() {
  echo "\$ ps; free -m"
  ps | grep -v ' \[' | grep -v -E ' (ps|grep|sh /suite.sh|init|sh)( |$)' | tail -n 30
  free -m
  # busybox timeout's watcher outlives its command by up to a second: give it that second.
  sleep 2
  left=$(ps -o pid,args | grep -E 'moat|krun' | grep -v -E 'grep|timeout' | cut -c1-120)
  if [ -n "$left" ]; then
    fail leftovers "processes left after the moat run cases: $(echo "$left" | tr '\n' ';')"
  else
    pass leftovers
  fi
}

# The lifecycle cases use a sandbox on the busybox test root; the host-root share has its own
# cases (run_echo, exit_code, stdin_cat, conformance_host_root), so one fault does not hide others.
case_create() {
  run create 120 moat create vt --isolation vm --rootfs /opt/rootfs
  if [ "$rc" != 0 ]; then
    fail create "moat create exited $rc: $(last "$w/create.err")"
    return
  fi
  figure "moat create --isolation vm (boot to ready): $ms ms"
  st=$(status_of vt)
  moat ls >"$w/ls.out" 2>&1
  show "$w/ls.out"
  if [ "$st" = running ] && grep -q '^vt  *running ' "$w/ls.out"; then
    pass create
  else
    fail create "after create: inspect status '$st', moat ls: $(grep '^vt ' "$w/ls.out")"
  fi
}

need_vt() {
  if [ "$(status_of vt)" != running ]; then
    fail "$1" "sandbox vt is not running (status '$(status_of vt)'): see case create"
    return 1
  fi
}

case_exec() {
  need_vt exec || return
  run exec 60 moat exec vt -- echo exec-marker-4711
  if [ "$rc" != 0 ] || [ "$(cat "$w/exec.out")" != exec-marker-4711 ]; then
    fail exec "exit $rc, stdout '$(head -c 80 "$w/exec.out")', stderr: $(last "$w/exec.err")"
    return
  fi
  run exec_code 60 moat exec vt -- sh -c 'exit 3'
  if [ "$rc" != 3 ]; then
    fail exec "sh -c 'exit 3' in vt exited $rc: $(last "$w/exec_code.err")"
    return
  fi
  total=0
  i=0
  while [ $i -lt 5 ]; do
    run exec_rt 60 moat exec vt -- true
    [ "$rc" = 0 ] || break
    total=$((total + ms))
    i=$((i + 1))
  done
  if [ $i -lt 5 ]; then
    fail exec "moat exec vt -- true exited $rc: $(last "$w/exec_rt.err")"
    return
  fi
  pass exec
  figure "moat exec vt -- true, round trip including the CLI's start: $((total / 5)) ms (mean of 5)"
}

case_fs_relay() {
  need_vt fs_relay || return
  sock=$(moat socket vt)
  run fs_relay 120 moat-conformance run --socket "$sock" --case fs/write_read --case fs/stat
  if [ "$rc" = 0 ] && grep -q 'PASS.*fs/write_read' "$w/fs_relay.out"; then
    pass fs_relay
  else
    fail fs_relay "a file written and read back through the relay: exit $rc: $(grep -E 'FAIL' "$w/fs_relay.out" | head -n 1)$(last "$w/fs_relay.err")"
  fi
}

case_pty() {
  need_vt pty || return
  if ! command -v script >/dev/null 2>&1; then
    fail pty "no script(1) in the test host to give moat exec -t a terminal"
    return
  fi
  run pty 60 script -eqc "moat exec vt -t -- sh -c 'tty; stty size'" /dev/null
  if [ "$rc" = 0 ] && grep -q '^/dev/pts/' "$w/pty.out"; then
    pass pty
  else
    fail pty "moat exec -t under script: exit $rc, output '$(tr -d '\r' <"$w/pty.out" | head -c 120 | tr '\n' ' ')', stderr: $(last "$w/pty.err")"
  fi
}

case_logs() {
  need_vt logs || return
  run logs 30 moat logs vt
  if [ "$rc" = 0 ] && grep -q exec-marker-4711 "$w/logs.out"; then
    pass logs
  else
    fail logs "moat logs vt (exit $rc) does not hold the exec's output exec-marker-4711: $(last "$w/logs.err")"
  fi
}

case_conformance() {
  need_vt conformance || return
  sock=$(moat socket vt)
  run conformance 500 moat-conformance run --socket "$sock" --timeout 150
  lat=$(sed -n "s/^PASS latency\/ping: //p" "$w/conformance.out" | head -n 1)
  [ -n "$lat" ] && figure "conformance latency/ping through the relay: $lat"
  if [ "$rc" = 0 ]; then
    pass conformance
  else
    fail conformance "exit $rc; failing: $(sed -n 's/^FAIL \([^:]*\):.*/\1/p' "$w/conformance.out" | tr '\n' ' ') $(last "$w/conformance.err")"
  fi
}

# The same suite against a sandbox on the host root (the test host's own /usr, /bin, /lib...
# shared into the guest).
case_conformance_host_root() {
  run conformance_host_root_create 120 moat create vh --isolation vm
  if [ "$rc" != 0 ]; then
    fail conformance_host_root "moat create vh (host root) exited $rc: $(last "$w/conformance_host_root_create.err")"
    return
  fi
  sock=$(moat socket vh)
  run conformance_host_root 500 moat-conformance run --socket "$sock" --timeout 150
  if [ "$rc" = 0 ]; then
    pass conformance_host_root
  else
    fail conformance_host_root "exit $rc; failing: $(sed -n 's/^FAIL \([^:]*\):.*/\1/p' "$w/conformance_host_root.out" | tr '\n' ' ') $(last "$w/conformance_host_root.err")"
  fi
  moat stop vh >/dev/null 2>&1
  moat rm -f vh >/dev/null 2>&1
}

case_stop() {
  need_vt stop || return
  run stop 60 moat stop vt
  st=$(status_of vt)
  # How a clean power-off looks to libkrun, for comparison with a guest that ended unasked.
  echo "--- libkrun's last lines in vt's sandbox.log"
  grep krun_vmm /tmp/moat/sandboxes/vt/sandbox.log | tail -n 5 | cut -c1-200
  if [ "$rc" = 0 ] && [ "$st" = stopped ]; then
    pass stop
  else
    fail stop "moat stop exited $rc, status afterwards '$st': $(last "$w/stop.err")"
  fi
  moat rm -f vt >/dev/null 2>&1
}

case_crashed() {
  run crashed_create 120 moat create vc --isolation vm
  if [ "$rc" != 0 ]; then
    fail crashed "moat create vc exited $rc: $(last "$w/crashed_create.err")"
    return
  fi
  pid=$(pid_of vc)
  if [ -z "$pid" ]; then
    fail crashed "moat inspect vc gives no pid"
    return
  fi
  echo "\$ kill -9 $pid"
  kill -9 "$pid"
  i=0
  st=$(status_of vc)
  while [ "$st" != crashed ] && [ $i -lt 20 ]; do
    sleep 0.5
    st=$(status_of vc)
    i=$((i + 1))
  done
  moat ls >"$w/crashed_ls.out" 2>&1
  show "$w/crashed_ls.out"
  if [ "$st" = crashed ]; then
    pass crashed
  else
    fail crashed "after SIGKILL of the sandbox process $pid the status reads '$st'"
  fi
  moat rm -f vc >/dev/null 2>&1
}

# The guest agent confines what it starts as on the namespace backend: the default seccomp
# profile (Seccomp: 2) and masked /proc paths (nothing to read in keys, kcore, timer_list);
# `--security-profile none` lifts the filter.
case_vm_seccomp() {
  run vm_seccomp 120 moat run --isolation vm --rootfs /opt/rootfs -- \
    sh -c 'grep "^Seccomp:" /proc/self/status; cat /proc/keys /proc/kcore /proc/timer_list 2>/dev/null | wc -c'
  run vm_seccomp_none 120 moat run --isolation vm --rootfs /opt/rootfs --security-profile none -- \
    grep "^Seccomp:" /proc/self/status
  seccomp=$(awk '/^Seccomp:/{print $2}' "$w/vm_seccomp.out")
  masked=$(sed -n 2p "$w/vm_seccomp.out" | tr -d ' ')
  none=$(awk '/^Seccomp:/{print $2}' "$w/vm_seccomp_none.out")
  if [ "$seccomp" = 2 ] && [ "$masked" = 0 ] && [ "$none" = 0 ]; then
    pass vm_seccomp
  else
    fail vm_seccomp "default profile: Seccomp '$seccomp', bytes read from /proc/keys, kcore and timer_list '$masked' (want 2 and 0: masked); --security-profile none: Seccomp '$none' (want 0); stderr: $(last "$w/vm_seccomp.err")$(last "$w/vm_seccomp_none.err")"
  fi
}

# An unprivileged user with access to /dev/kvm alone (the kvm group) runs a microVM, with its
# state in its own home, on a root it owns. (Measured: files of a root owned by host root, the
# host's own /usr or /opt/rootfs, cannot be executed in such a guest, "Operation not permitted":
# host root is not mapped in the VM process's user namespace. See README.md.)
case_rootless_vm() {
  grep -q '^kvm:' /etc/group || echo 'kvm:x:108:moatuser' >>/etc/group
  grep -q '^moatuser:' /etc/passwd || echo 'moatuser:x:1000:1000::/tmp/moatuser:/bin/sh' >>/etc/passwd
  grep -q '^moatuser:' /etc/group || echo 'moatuser:x:1000:' >>/etc/group
  mkdir -p /tmp/moatuser
  rm -rf /tmp/moatuser/rootfs
  cp -a /opt/rootfs /tmp/moatuser/rootfs
  chown -R 1000:1000 /tmp/moatuser
  chgrp 108 /dev/kvm
  chmod 660 /dev/kvm
  # The full path: busybox sh prefers its own setpriv applet, which has no --reuid.
  run rootless_vm 120 /usr/bin/setpriv --reuid 1000 --regid 1000 --groups 108 \
    env HOME=/tmp/moatuser MOAT_HOME=/tmp/moatuser/.moat \
    moat run --isolation vm --rootfs /tmp/moatuser/rootfs -- sh -c 'cat /etc/moat-test-marker; exit 5'
  owner=$(stat -c %u /tmp/moatuser/.moat 2>/dev/null)
  left=$(ps -o user,args | grep -E '^ *(1000|moatuser) ' | grep -v -E 'grep|ps ' | cut -c1-120)
  if [ "$rc" = 5 ] && [ "$(cat "$w/rootless_vm.out")" = "moat vm-host test rootfs" ] &&
    [ "$owner" = 1000 ] && [ -z "$left" ]; then
    pass rootless_vm
  else
    fail rootless_vm "as uid 1000 in the kvm group: exit $rc (want 5), stdout '$(head -c 80 "$w/rootless_vm.out")', state dir owner '$owner', left running '$left', stderr: $(last "$w/rootless_vm.err")"
  fi
  chmod 666 /dev/kvm
}

# A guest boot failure must be reported with its cause (kernel log tail, agent init failure), in
# bounded time: not as a bare timeout.
boot_failure() {
  name=$1
  shift
  run "$name" 150 "$@"
  if [ "$rc" = 0 ]; then
    fail "$name" "a guest that cannot boot was reported as a success"
  elif [ "$rc" = 124 ] || [ "$ms" -gt 120000 ]; then
    fail "$name" "no answer within 120 s (exit $rc)"
  elif grep -q -i -E 'panic|kernel|agent|init|no such file|not found|exec format|console' "$w/$name.err"; then
    pass "$name"
  else
    fail "$name" "exit $rc without a cause: $(last "$w/$name.err")"
  fi
}

# `--image` on the VM backend: run.sh pulled a two-layer image into /opt/image-home on the outer
# host (image-store.sh); with no command the image's Cmd runs, in its WorkingDir, with its Env,
# over the layers stacked on the host (a file from each layer, layer 2's whiteout applied).
case_image() {
  if [ -s /etc/vmtest-image-error ] || [ ! -s /etc/vmtest-image ]; then
    fail image "the outer host could not prepare the image store: $(cat /etc/vmtest-image-error 2>/dev/null)"
    return
  fi
  ref=$(cat /etc/vmtest-image)
  run image 120 env MOAT_HOME=/opt/image-home moat run --isolation vm --image "$ref"
  expected="hi from /work
hello from layer 2
removed
moat vm-host test rootfs"
  if [ "$rc" = 0 ] && [ "$(cat "$w/image.out")" = "$expected" ]; then
    pass image
  else
    MOAT_HOME=/opt/image-home fail image "exit $rc, stdout '$(tr '\n' '|' <"$w/image.out" | head -c 120)', stderr: $(last "$w/image.err")"
  fi
  figure "image: moat run --image (cached, 2 layers) took $ms ms"
}

case_boot_fail_rootfs() {
  boot_failure boot_fail_rootfs moat run --isolation vm --rootfs /opt/emptyroot -- /bin/sh -c true
}

case_boot_fail_agentd() {
  # An "agent" that is not an executable at all: the guest has no init it can run.
  printf 'not an executable\n' >/tmp/broken-agentd
  chmod 755 /tmp/broken-agentd
  boot_failure boot_fail_agentd env MOAT_AGENTD_STATIC=/tmp/broken-agentd \
    moat run --isolation vm --rootfs /opt/rootfs -- true
}

# --- The guest network (docs/NETWORK.md). Servers are the test host's own: busybox httpd on its
# loopback (what host.moat.internal reaches), and a "fake internet" in a network namespace it
# makes itself (203.0.113.10 public, 10.9.9.9 private), reached through a veth pair. Nothing
# leaves the test host.
net_servers_up=no
net_servers() {
  [ "$net_servers_up" = yes ] && return 0
  mkdir -p /tmp/www/a /tmp/www/b /tmp/www/world
  echo loopback-a >/tmp/www/a/ok.txt
  echo loopback-b >/tmp/www/b/ok.txt
  echo world >/tmp/www/world/ok.txt
  busybox httpd -p 127.0.0.1:18081 -h /tmp/www/a
  busybox httpd -p 127.0.0.1:18082 -h /tmp/www/b
  mkdir -p /run/netns
  /usr/bin/ip netns add world &&
    /usr/bin/ip link add vt-world type veth peer name eth0 netns world &&
    /usr/bin/ip addr add 203.0.113.1/24 dev vt-world &&
    /usr/bin/ip link set vt-world up &&
    /usr/bin/ip route add 10.9.9.9/32 via 203.0.113.10 &&
    /usr/bin/nsenter --net=/run/netns/world /usr/bin/ip addr add 203.0.113.10/24 dev eth0 &&
    /usr/bin/nsenter --net=/run/netns/world /usr/bin/ip addr add 10.9.9.9/32 dev eth0 &&
    /usr/bin/nsenter --net=/run/netns/world /usr/bin/ip link set eth0 up &&
    /usr/bin/nsenter --net=/run/netns/world /usr/bin/ip link set lo up &&
    /usr/bin/nsenter --net=/run/netns/world busybox httpd -p 80 -h /tmp/www/world || return 1
  # The servers answer the test host itself.
  for u in http://127.0.0.1:18081/ok.txt http://127.0.0.1:18082/ok.txt \
    http://203.0.113.10/ok.txt http://10.9.9.9/ok.txt; do
    busybox timeout 5 busybox wget -q -O - "$u" >/dev/null || {
      echo "the test host cannot reach its own server $u"
      return 1
    }
  done
  net_servers_up=yes
}
# A guest script that fetches each URL and prints `URL -> BODY` or `URL -> failed`.
# (busybox 1.35's `wget -T` segfaults: timeout(1) bounds it instead.)
fetch_script='for u in "$@"; do b=$(timeout 8 wget -q -O - "$u" 2>/dev/null) && echo "$u -> $b" || echo "$u -> failed"; done'
# Whether $w/$1.out says URL -> WANT.
fetched() { grep -qxF "$2 -> $3" "$w/$1.out"; }

# Default `--network none`: no TSI and no network device (libkrunfw's kernel has only `lo` and an
# unconfigured `dummy0`); nothing answers, not the host's loopback alias, slirp4netns's gateway,
# nor the fake internet.
case_net_none() {
  net_servers || {
    fail net_none "the test host's servers did not start"
    return
  }
  run net_none 120 moat run --isolation vm --rootfs /opt/rootfs -- sh -c \
    "ls /sys/class/net | tr '\n' ' '; echo; $fetch_script" - \
    http://10.254.254.5:18081/ok.txt http://10.0.2.2:18081/ok.txt http://203.0.113.10/ok.txt
  if [ "$rc" = 0 ] && ! head -n 1 "$w/net_none.out" | grep -q eth &&
    fetched net_none http://10.254.254.5:18081/ok.txt failed &&
    fetched net_none http://10.0.2.2:18081/ok.txt failed &&
    fetched net_none http://203.0.113.10/ok.txt failed; then
    pass net_none
  else
    fail net_none "exit $rc, stdout '$(tr '\n' '|' <"$w/net_none.out" | head -c 300)', stderr: $(last "$w/net_none.err")"
  fi
}

# `--allow host.moat.internal:18081`: that port of the test host's loopback answers, by name
# (the guest's resolver is the forwarder) and by the alias address; its port 18082 does not, nor
# the fake internet (the mode is still none).
case_net_allow() {
  net_servers || {
    fail net_allow "the test host's servers did not start"
    return
  }
  run net_allow 120 moat run --isolation vm --rootfs /opt/rootfs \
    --allow host.moat.internal:18081 -- sh -c "$fetch_script" - \
    http://host.moat.internal:18081/ok.txt http://10.254.254.5:18081/ok.txt \
    http://host.moat.internal:18082/ok.txt http://203.0.113.10/ok.txt
  if [ "$rc" = 0 ] && fetched net_allow http://host.moat.internal:18081/ok.txt loopback-a &&
    fetched net_allow http://10.254.254.5:18081/ok.txt loopback-a &&
    fetched net_allow http://host.moat.internal:18082/ok.txt failed &&
    fetched net_allow http://203.0.113.10/ok.txt failed; then
    pass net_allow
  else
    fail net_allow "exit $rc, stdout '$(tr '\n' '|' <"$w/net_allow.out" | head -c 400)', stderr: $(last "$w/net_allow.err")"
  fi
}

# `--network public`: the fake internet's public server answers; its private address, the host's
# loopback (alias and slirp4netns's gateway) do not.
case_net_public() {
  net_servers || {
    fail net_public "the test host's servers did not start"
    return
  }
  run net_public 120 moat run --isolation vm --rootfs /opt/rootfs --network public -- \
    sh -c "$fetch_script" - http://203.0.113.10/ok.txt http://10.9.9.9/ok.txt \
    http://host.moat.internal:18081/ok.txt http://10.0.2.2:18081/ok.txt
  if [ "$rc" = 0 ] && fetched net_public http://203.0.113.10/ok.txt world &&
    fetched net_public http://10.9.9.9/ok.txt failed &&
    fetched net_public http://host.moat.internal:18081/ok.txt failed &&
    fetched net_public http://10.0.2.2:18081/ok.txt failed; then
    pass net_public
  else
    fail net_public "exit $rc, stdout '$(tr '\n' '|' <"$w/net_public.out" | head -c 400)', stderr: $(last "$w/net_public.err")"
  fi
}

# DNS: the guest's /etc/resolv.conf names the forwarder, which answers host.moat.internal itself
# (the alias address), whatever the mode.
case_net_dns() {
  run net_dns 120 moat run --isolation vm --rootfs /opt/rootfs --network all -- sh -c \
    'cat /etc/resolv.conf; nslookup host.moat.internal'
  if [ "$rc" = 0 ] && grep -qx 'nameserver 10.254.254.1' "$w/net_dns.out" &&
    grep -q 'Address.*10\.254\.254\.5' "$w/net_dns.out"; then
    pass net_dns
  else
    fail net_dns "exit $rc, stdout '$(tr '\n' '|' <"$w/net_dns.out" | head -c 400)', stderr: $(last "$w/net_dns.err")"
  fi
}

# `-p 127.0.0.1:18090:8080`: a server the guest starts on port 8080 answers on the test host's
# 127.0.0.1:18090, with the default mode none.
case_net_publish() {
  echo "\$ moat run --isolation vm --rootfs /opt/rootfs -p 127.0.0.1:18090:8080 -- (httpd on 8080) &"
  timeout -k 10 150 moat run --isolation vm --rootfs /opt/rootfs -p 127.0.0.1:18090:8080 -- \
    sh -c 'mkdir -p /tmp/p; echo published >/tmp/p/ok.txt; httpd -f -p 8080 -h /tmp/p & sleep 120' \
    >"$w/net_publish.out" 2>"$w/net_publish.err" &
  mpid=$!
  got=
  i=0
  while [ $i -lt 110 ] && kill -0 "$mpid" 2>/dev/null; do
    got=$(busybox timeout 3 busybox wget -q -O - http://127.0.0.1:18090/ok.txt 2>/dev/null) && break
    got=
    sleep 1
    i=$((i + 1))
  done
  echo "(after $i s the test host read '$got' from 127.0.0.1:18090)"
  kill -TERM "$mpid" 2>/dev/null
  wait "$mpid"
  show "$w/net_publish.out" "$w/net_publish.err"
  if [ "$got" = published ]; then
    pass net_publish
  else
    fail net_publish "the test host read '$got' from the published port; stderr: $(last "$w/net_publish.err")"
  fi
}

# The guest's root cannot lift the policy: with every capability (`--security-profile none`) it
# gives itself routes and addresses (slirp4netns's network and the fake internet's on its
# loopback, the sandbox's own address and a default route on dummy0), and what was denied stays
# denied. The policy is not in the guest: its sockets are the VM process's, judged in the router
# namespace, which the guest cannot reach.
case_net_root() {
  net_servers || {
    fail net_root "the test host's servers did not start"
    return
  }
  run net_root 120 moat run --isolation vm --rootfs /opt/rootfs --security-profile none \
    --allow host.moat.internal:18081 -- sh -c \
    "id -u; timeout 8 wget -q -O - http://host.moat.internal:18081/ok.txt || echo allowed-failed;
     ip link set lo up; ip addr add 10.0.2.15/24 dev lo; ip addr add 203.0.113.2/24 dev lo;
     ip link set dummy0 up; ip addr add 10.254.254.2/30 dev dummy0;
     ip route add default via 10.254.254.1 dev dummy0; ip route; $fetch_script" - \
    http://host.moat.internal:18082/ok.txt http://10.0.2.2:18081/ok.txt \
    http://203.0.113.10/ok.txt http://10.9.9.9/ok.txt
  if [ "$rc" = 0 ] && [ "$(sed -n 1,2p "$w/net_root.out" | tr '\n' ' ')" = "0 loopback-a " ] &&
    ! grep -q 'not permitted' "$w/net_root.err" &&
    [ "$(grep -c -- '-> failed$' "$w/net_root.out")" = 4 ]; then
    pass net_root
  else
    fail net_root "exit $rc, stdout '$(tr '\n' '|' <"$w/net_root.out" | head -c 400)', stderr: $(last "$w/net_root.err")"
  fi
}


# ---------------------------------------------------------------------------------------------
# Issue 12's CLI on a VM: named volumes, --patch, stats, cp, logs --json/--after/--since,
# port-forward, start, drain. They share one sandbox, v12 (busybox root, two named volumes,
# root patches), made by `volume`; `drain` stops it and `volume_rm` removes it.

# A number field of `moat ... --json` (pretty-printed: one field a line).
json_num() { sed -n "s/^ *\"$2\": \([0-9][0-9]*\).*/\1/p" "$1" | head -n 1; }
json_str() { sed -n "s/^ *\"$2\": \"\([^\"]*\)\".*/\1/p" "$1" | head -n 1; }
sha_of() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
need_v12() {
  if [ "$(status_of v12)" != running ]; then
    fail "$1" "sandbox v12 is not running (status '$(status_of v12)'): see case volume"
    return 1
  fi
}

# `moat volume create/ls/inspect`, `-v NAME:/path` on a VM, the data seen by a second sandbox
# mounting the volume `:ro` (which refuses writes), `volume rm` refused while v12 runs.
case_volume() {
  rm -rf /tmp/moat/volumes/v12data /tmp/moat/volumes/v12quota
  run volume_create 30 moat volume create v12data
  if [ "$rc" != 0 ] || [ "$(cat "$w/volume_create.out")" != v12data ]; then
    fail volume "moat volume create v12data: exit $rc, stdout '$(head -c 80 "$w/volume_create.out")': $(last "$w/volume_create.err")"
    return
  fi
  run volume_create_quota 60 moat volume create v12quota --quota 16
  if [ "$rc" != 0 ]; then
    fail volume "moat volume create v12quota --quota 16: exit $rc: $(last "$w/volume_create_quota.err")"
    return
  fi
  run volume_ls 30 moat volume ls
  run volume_ls_json 30 moat volume ls --json
  if ! grep -q '^v12data  *- ' "$w/volume_ls.out" || ! grep -q '^v12quota  *16MiB ' "$w/volume_ls.out" ||
    [ "$(grep -c '"name": "v12' "$w/volume_ls_json.out")" != 2 ]; then
    fail volume "moat volume ls does not list v12data (no quota) and v12quota (16MiB), or --json not both"
    return
  fi
  head -c 65536 /dev/urandom >"$w/patch-src.bin"
  run volume_sandbox 150 moat create v12 --isolation vm --rootfs /opt/rootfs \
    -v v12data:/data -v v12quota:/quota \
    --patch text:/etc/moat-patched=patched-by-moat-12 \
    --patch append:/etc/moat-test-marker=appended-by-patch \
    --patch "copy-file:$w/patch-src.bin=/opt/p12.bin" \
    --patch mkdir:/srv/p12:750 \
    --patch symlink:/etc/p12-link=/etc/moat-patched \
    --patch text:/etc/p12-gone=soon-removed --patch rm:/etc/p12-gone
  if [ "$rc" != 0 ]; then
    fail volume "moat create v12 with -v v12data:/data -v v12quota:/quota and patches: exit $rc: $(last "$w/volume_sandbox.err")"
    return
  fi
  figure "moat create --isolation vm with two named volumes and 7 patches (boot to ready): $ms ms"
  run volume_write 60 moat exec v12 -- sh -c 'echo from-v12 > /data/note && cat /data/note'
  host_note=$(cat /tmp/moat/volumes/v12data/data/note 2>/dev/null)
  if [ "$rc" != 0 ] || [ "$(cat "$w/volume_write.out")" != from-v12 ] || [ "$host_note" != from-v12 ]; then
    fail volume "a write to /data in v12: exit $rc, stdout '$(head -c 80 "$w/volume_write.out")', the volume's file on the host '$host_note': $(last "$w/volume_write.err")"
    return
  fi
  run volume_inspect 30 moat volume inspect v12data
  if [ "$(json_str "$w/volume_inspect.out" path)" != /tmp/moat/volumes/v12data/data ] ||
    ! tr -d ' \n' <"$w/volume_inspect.out" | grep -q '"used_by":\[{"sandbox":"v12","status":"running"}\]'; then
    fail volume "moat volume inspect v12data: path '$(json_str "$w/volume_inspect.out" path)', used_by not [v12 running]"
    return
  fi
  run volume_rm_in_use 30 moat volume rm v12data
  if [ "$rc" = 0 ] || [ ! -e /tmp/moat/volumes/v12data/data/note ]; then
    fail volume "moat volume rm v12data while v12 runs with it: exit $rc (want a refusal)"
    return
  fi
  # A second sandbox mounts the volume read-only: it reads v12's file and cannot write.
  run volume_ro 150 moat run --isolation vm --rootfs /opt/rootfs -v v12data:/data:ro -- \
    sh -c 'cat /data/note; echo x > /data/other && echo WROTE; grep " /data " /proc/mounts'
  if [ "$rc" != 0 ] || [ "$(head -n 1 "$w/volume_ro.out")" != from-v12 ] ||
    grep -q WROTE "$w/volume_ro.out" || [ -e /tmp/moat/volumes/v12data/data/other ] ||
    ! sed -n 2p "$w/volume_ro.out" | grep -q -E ' ro[, ]'; then
    fail volume "a second sandbox with -v v12data:/data:ro: exit $rc, stdout '$(tr '\n' '|' <"$w/volume_ro.out" | head -c 200)', stderr: $(last "$w/volume_ro.err")"
    return
  fi
  pass volume
}

# A volume with --quota 16 (an ext4 image loop-mounted on the test host) fills up inside the
# VM: dd past it fails with ENOSPC, and the volume's used bytes show the data.
case_volume_quota() {
  need_v12 volume_quota || return
  run volume_quota 120 moat exec v12 -- sh -c 'dd if=/dev/zero of=/quota/big bs=1M count=32 2>&1; echo status=$?; sync'
  run volume_quota_inspect 30 moat volume inspect v12quota
  used=$(json_num "$w/volume_quota_inspect.out" used_bytes)
  quota=$(json_num "$w/volume_quota_inspect.out" quota_mib)
  moat exec v12 -- rm -f /quota/big >/dev/null 2>&1
  if grep -q 'No space left on device' "$w/volume_quota.out" && ! grep -q 'status=0' "$w/volume_quota.out" &&
    [ "$quota" = 16 ] && [ "${used:-0}" -gt $((10 << 20)) ]; then
    pass volume_quota
  else
    fail volume_quota "dd of 32 MiB into a 16 MiB volume: '$(tr '\n' '|' <"$w/volume_quota.out" | head -c 200)' (want ENOSPC, status not 0); inspect: quota_mib '$quota', used_bytes '$used'"
  fi
}

# The --patch forms v12 was created with, seen in the guest; the --rootfs directory untouched.
case_patch() {
  need_v12 patch || return
  run patch 60 moat exec v12 -- sh -c 'cat /etc/moat-patched; echo; tail -n 1 /etc/moat-test-marker; echo; sha256sum /opt/p12.bin | cut -d" " -f1; stat -c %a /srv/p12; readlink /etc/p12-link; test -e /etc/p12-gone && echo gone-is-present || echo gone-is-absent'
  expected="patched-by-moat-12
appended-by-patch
$(sha_of "$w/patch-src.bin")
750
/etc/moat-patched
gone-is-absent"
  if [ "$rc" = 0 ] && [ "$(cat "$w/patch.out")" = "$expected" ] && [ ! -e /opt/rootfs/etc/moat-patched ] &&
    [ "$(cat /opt/rootfs/etc/moat-test-marker)" = "moat vm-host test rootfs" ]; then
    pass patch
  else
    fail patch "exit $rc, guest saw '$(tr '\n' '|' <"$w/patch.out")', want '$(echo "$expected" | tr '\n' '|')'; /opt/rootfs/etc/moat-patched exists: $([ -e /opt/rootfs/etc/moat-patched ] && echo yes || echo no); stderr: $(last "$w/patch.err")"
  fi
}

# `moat stats NAME --json` and `moat stats --json` on a running VM: the VMM process's figures.
case_stats() {
  need_v12 stats || return
  run stats 60 moat stats v12 --json
  mem=$(json_num "$w/stats.out" memory_bytes)
  mem_limit=$(json_num "$w/stats.out" memory_limit_bytes)
  up=$(json_num "$w/stats.out" uptime_ms)
  cpu=$(json_num "$w/stats.out" cpu_time_ns)
  src=$(json_str "$w/stats.out" source)
  run stats_all 60 moat stats --json
  up2=$(sed -n '/"sandbox": "v12"/,/}/p' "$w/stats_all.out" | sed -n 's/^ *"uptime_ms": \([0-9]*\).*/\1/p')
  if [ "$rc" = 0 ] && [ "${mem:-0}" -gt $((1 << 20)) ] && [ "$mem_limit" = $((512 << 20)) ] &&
    [ "${up:-0}" -gt 0 ] && [ "${cpu:-0}" -gt 0 ] && [ "$src" = vmm-process ] &&
    [ -n "$up2" ] && [ "$up2" -gt "$up" ]; then
    pass stats
    figure "moat stats v12: memory_bytes $mem (the VMM's resident set), cpu_time_ns $cpu, uptime_ms $up"
  else
    fail stats "memory_bytes '$mem' (want > 1 MiB), memory_limit_bytes '$mem_limit' (want 512 MiB), uptime_ms '$up', cpu_time_ns '$cpu', source '$src', later uptime in moat stats --json '$up2'; stderr: $(last "$w/stats.err")$(last "$w/stats_all.err")"
  fi
}

# `moat cp` both ways, a file and a directory, checked by sha256.
case_cp() {
  need_v12 cp || return
  head -c 1048576 /dev/urandom >"$w/cp-in.bin"
  rm -rf "$w/cpdir" "$w/cpback" "$w/cp-out.bin"
  mkdir -p "$w/cpdir/sub" "$w/cpback"
  head -c 5000 /dev/urandom >"$w/cpdir/a.bin"
  echo nested >"$w/cpdir/sub/b.txt"
  run cp_in 60 moat cp "$w/cp-in.bin" v12:/tmp/cp-in.bin
  run cp_in_sha 60 moat exec v12 -- sha256sum /tmp/cp-in.bin
  in_guest=$(cut -d' ' -f1 "$w/cp_in_sha.out")
  run cp_out_make 60 moat exec v12 -- sh -c 'head -c 300000 /dev/urandom > /tmp/cp-out.bin; sha256sum /tmp/cp-out.bin'
  made=$(cut -d' ' -f1 "$w/cp_out_make.out")
  run cp_out 60 moat cp v12:/tmp/cp-out.bin "$w/cp-out.bin"
  run cp_dir_in 60 moat cp "$w/cpdir" v12:/tmp
  run cp_dir_out 60 moat cp v12:/tmp/cpdir "$w/cpback"
  if [ "$in_guest" != "$(sha_of "$w/cp-in.bin")" ]; then
    fail cp "host to guest: sha256 in the guest '$in_guest', on the host '$(sha_of "$w/cp-in.bin")'; stderr: $(last "$w/cp_in.err")"
  elif [ -z "$made" ] || [ "$made" != "$(sha_of "$w/cp-out.bin")" ]; then
    fail cp "guest to host: sha256 in the guest '$made', of the copy '$(sha_of "$w/cp-out.bin")'; stderr: $(last "$w/cp_out.err")"
  elif ! diff -r "$w/cpdir" "$w/cpback/cpdir" >"$w/cp_diff.out" 2>&1; then
    show "$w/cp_diff.out"
    fail cp "a directory copied in and back differs: $(last "$w/cp_diff.out") $(last "$w/cp_dir_in.err") $(last "$w/cp_dir_out.err")"
  else
    pass cp
  fi
}

# `moat logs --json` (one object a line with a cursor), `--after CURSOR`, `--since`.
case_logs_json() {
  need_v12 logs_json || return
  moat exec v12 -- echo logs-json-1 >/dev/null 2>&1
  moat exec v12 -- echo logs-json-2 >/dev/null 2>&1
  run logs_json 30 moat logs v12 --source stdout --json
  cursor=$(grep '"text":"logs-json-1\\n"' "$w/logs_json.out" | sed -n 's/.*"cursor":"\([^"]*\)".*/\1/p' | head -n 1)
  run logs_after 30 moat logs v12 --source stdout --after "$cursor"
  run logs_since 30 moat logs v12 --source stdout --since 1h
  run logs_future 30 moat logs v12 --since 2999-01-01T00:00:00Z
  if [ -n "$cursor" ] && grep -q '"source":"stdout"' "$w/logs_json.out" &&
    [ "$(cat "$w/logs_after.out")" = logs-json-2 ] &&
    grep -q '^logs-json-1$' "$w/logs_since.out" && grep -q '^logs-json-2$' "$w/logs_since.out" &&
    [ ! -s "$w/logs_future.out" ]; then
    pass logs_json
  else
    fail logs_json "cursor of logs-json-1 '$cursor'; --after it: '$(tr '\n' '|' <"$w/logs_after.out" | head -c 120)' (want logs-json-2); --since 1h has both: $(grep -c '^logs-json-[12]$' "$w/logs_since.out"); --since 2999: $(wc -c <"$w/logs_future.out") bytes"
  fi
}

# An HTTP/1.0 GET of $2 from 127.0.0.1:$1 with busybox nc (this static busybox's wget crashes
# in glibc's resolver); the whole response, carriage returns removed.
http_get() {
  printf 'GET %s HTTP/1.0\r\n\r\n' "$2" | timeout 15 nc 127.0.0.1 "$1" 2>>"$w/pf_nc.err" | tr -d '\r'
}

# `moat port-forward`: busybox httpd on the guest's port 8080, fetched from the test host through
# 127.0.0.1:18080. The guest has no network device but lo and the kernel's dummy0 (no TSI, no
# virtio-net): the bytes can only go through the relay.
case_port_forward() {
  need_v12 port_forward || return
  run pf_setup 60 moat exec v12 -- sh -c 'mkdir -p /tmp/www && echo pf-body-12 > /tmp/www/index.html; cat /proc/net/dev'
  ifaces=$(sed -n 's/^ *\([a-z0-9]*\):.*/\1/p' "$w/pf_setup.out" | grep -v '^dummy' | tr '\n' ' ')
  : >"$w/pf_nc.err"
  moat exec v12 -- httpd -f -p 8080 -h /tmp/www >"$w/pf_server.out" 2>&1 &
  server=$!
  moat port-forward v12 127.0.0.1:18080:8080 >"$w/pf.out" 2>"$w/pf.err" &
  forward=$!
  i=0
  : >"$w/pf_get.out"
  while [ $i -lt 60 ]; do
    if grep -q '^forwarding 127.0.0.1:18080 -> v12:8080' "$w/pf.out"; then
      http_get 18080 /index.html >"$w/pf_get.out"
      [ "$(tail -n 1 "$w/pf_get.out")" = pf-body-12 ] && break
    fi
    sleep 1
    i=$((i + 1))
  done
  # A second fetch on a new connection, timed.
  t0=$(now_ms)
  http_get 18080 /index.html >"$w/pf_get2.out"
  fetch_ms=$(($(now_ms) - t0))
  show "$w/pf.out" "$w/pf.err" "$w/pf_get.out" "$w/pf_get2.out" "$w/pf_nc.err"
  kill "$forward" 2>/dev/null
  wait "$forward"
  pf_rc=$?
  moat exec v12 -- killall httpd >/dev/null 2>&1
  wait "$server"
  show "$w/pf_server.out"
  if head -n 1 "$w/pf_get.out" | grep -q -E '^HTTP/1\.[01] 200 OK$' &&
    [ "$(tail -n 1 "$w/pf_get.out")" = pf-body-12 ] &&
    [ "$(tail -n 1 "$w/pf_get2.out")" = pf-body-12 ] && [ "$ifaces" = "lo " ] && [ "$pf_rc" = 0 ]; then
    pass port_forward
    figure "a second HTTP GET through moat port-forward to httpd in the VM: $fetch_ms ms"
  else
    fail port_forward "GET through 127.0.0.1:18080: '$(tr '\n' '|' <"$w/pf_get.out" | head -c 160)', then '$(tail -n 1 "$w/pf_get2.out")' (want HTTP/1.x 200 OK ... pf-body-12), guest interfaces besides dummy '$ifaces' (want lo alone), port-forward exit after SIGTERM $pf_rc; $(last "$w/pf.err") $(last "$w/pf_nc.err")"
  fi
}

# `moat stop`, then `moat start` boots v12 again: exec works, the volume's data and the patches
# are there, a second start is refused.
case_start() {
  need_v12 start || return
  run start_stop 60 moat stop v12
  run start_refused 30 moat exec v12 -- true
  refused_rc=$rc
  if [ "$(status_of v12)" != stopped ] || [ "$refused_rc" = 0 ] ||
    ! grep -q 'not running (it is stopped)' "$w/start_refused.err"; then
    fail start "after moat stop: status '$(status_of v12)', exec exit $refused_rc: $(last "$w/start_refused.err")"
    return
  fi
  run start 150 moat start v12
  if [ "$rc" != 0 ]; then
    fail start "moat start v12 exited $rc: $(last "$w/start.err")"
    return
  fi
  figure "moat start of a stopped VM sandbox (boot to ready): $ms ms"
  run start_exec 60 moat exec v12 -- cat /data/note /etc/moat-patched
  run start_again 60 moat start v12
  again_rc=$rc
  if [ "$(printf 'from-v12\npatched-by-moat-12')" = "$(cat "$w/start_exec.out")" ] &&
    [ "$(status_of v12)" = running ] && [ "$again_rc" != 0 ] &&
    grep -q 'already running' "$w/start_again.err"; then
    pass start
  else
    fail start "after moat start: exec read '$(tr '\n' '|' <"$w/start_exec.out")' (want from-v12|patched-by-moat-12), status '$(status_of v12)', a second start exited $again_rc: $(last "$w/start_again.err")"
  fi
}

# `moat drain`: an exec running at the drain finishes with its output, a new exec is refused,
# and the sandbox stops by itself once the running exec has ended.
case_drain() {
  need_v12 drain || return
  moat exec v12 -- rm -f /tmp/drain-started >/dev/null 2>&1
  (
    moat exec v12 -- sh -c 'touch /tmp/drain-started; sleep 10; echo drain-finished' \
      >"$w/drain_bg.out" 2>"$w/drain_bg.err"
    echo $? >"$w/drain_bg.rc"
  ) &
  bg=$!
  i=0
  until moat exec v12 -- test -e /tmp/drain-started >/dev/null 2>&1 || [ $i -ge 30 ]; do
    i=$((i + 1))
  done
  run drain 60 moat drain v12
  drain_rc=$rc
  st=$(status_of v12)
  run drain_refused 30 moat exec v12 -- echo sneaked-in
  refused_rc=$rc
  wait "$bg"
  run drain_wait 90 moat wait v12 --timeout 60
  wait_rc=$rc
  moat inspect v12 >"$w/drain_inspect.out" 2>&1
  reason=$(json_str "$w/drain_inspect.out" stop_reason)
  final=$(json_str "$w/drain_inspect.out" status)
  show "$w/drain_bg.out" "$w/drain_bg.err"
  if [ "$drain_rc" = 0 ] && [ "$st" = draining ] && [ "$refused_rc" != 0 ] &&
    grep -q 'draining' "$w/drain_refused.err" && ! grep -q sneaked-in "$w/drain_refused.out" &&
    [ "$(cat "$w/drain_bg.out")" = drain-finished ] && [ "$(cat "$w/drain_bg.rc")" = 0 ] &&
    [ "$wait_rc" = 0 ] && [ "$final" = stopped ] && [ "$reason" = "drained: the last exec ended" ]; then
    pass drain
  else
    fail drain "moat drain exit $drain_rc, status then '$st' (want draining); a new exec exit $refused_rc: $(last "$w/drain_refused.err"); the running exec: exit '$(cat "$w/drain_bg.rc")', stdout '$(cat "$w/drain_bg.out")'; moat wait exit $wait_rc; final status '$final', stop_reason '$reason'"
  fi
}

# v12 removed, the volumes are still there with their data, then `moat volume rm` removes them
# (the quota volume's ext4 image unmounted).
case_volume_rm() {
  moat stop v12 >/dev/null 2>&1
  run volume_rm_sandbox 60 moat rm -f v12
  run volume_rm_inspect 30 moat volume inspect v12data
  users=$(tr -d ' \n' <"$w/volume_rm_inspect.out" | grep -o '"used_by":\[[^]]*\]')
  note=$(cat /tmp/moat/volumes/v12data/data/note 2>/dev/null)
  run volume_rm 30 moat volume rm v12data
  data_rc=$rc
  run volume_rm_quota 30 moat volume rm v12quota
  quota_rc=$rc
  run volume_rm_ls 30 moat volume ls
  if [ "$users" = '"used_by":[]' ] && [ "$note" = from-v12 ] && [ "$data_rc" = 0 ] &&
    [ "$quota_rc" = 0 ] && ! grep -q '^v12' "$w/volume_rm_ls.out" &&
    [ ! -e /tmp/moat/volumes/v12data ] && [ ! -e /tmp/moat/volumes/v12quota ] &&
    ! grep -q v12quota /proc/mounts; then
    pass volume_rm
  else
    fail volume_rm "after rm -f v12: used_by '$users' (want []), the note '$note'; volume rm exits $data_rc / $quota_rc; ls: $(grep '^v12' "$w/volume_rm_ls.out" | tr '\n' ' '); mounted: $(grep v12quota /proc/mounts)"
  fi
}

# ---------------------------------------------------------------------------------------------
# Issue 12's stop signal and attached create on a VM.

# `moat create --stop-signal USR1`: `moat stop` sends SIGUSR1 to a running exec (a shell trapping
# it writes USR1 to a shared directory) before core.shutdown; `moat stop --signal INT` after a
# `moat start` overrides it.
case_stop_signal() {
  d=$w/sigdir
  rm -rf "$d" && mkdir -p "$d"
  trapper="trap 'echo USR1 > /out/marker; exit 0' USR1; trap 'echo INT > /out/marker; exit 0' INT; echo up > /out/ready; while :; do sleep 1; done"
  run stop_signal_create 120 moat create vsig --isolation vm --rootfs /opt/rootfs \
    --stop-signal USR1 -v "$d:/out"
  if [ "$rc" != 0 ]; then
    fail stop_signal "moat create --stop-signal exited $rc: $(last "$w/stop_signal_create.err")"
    return
  fi
  for sig in USR1 INT; do
    rm -f "$d/marker" "$d/ready"
    if [ "$sig" = INT ]; then
      run stop_signal_start 120 moat start vsig
    fi
    moat exec vsig -- sh -c "$trapper" >"$w/stop_signal_exec.out" 2>&1 &
    execpid=$!
    i=0
    while [ ! -f "$d/ready" ] && [ $i -lt 60 ]; do
      sleep 1
      i=$((i + 1))
    done
    if [ "$sig" = USR1 ]; then
      run stop_signal_stop 120 moat stop vsig --timeout 60
    else
      run stop_signal_stop 120 moat stop vsig --signal INT --timeout 60
    fi
    wait "$execpid"
    execrc=$?
    got=$(cat "$d/marker" 2>/dev/null)
    st=$(status_of vsig)
    if [ "$rc" != 0 ] || [ "$got" != "$sig" ] || [ "$execrc" != 0 ] || [ "$st" != stopped ]; then
      fail stop_signal "stop ($sig): moat stop exited $rc, marker '$got', the exec exited $execrc, status '$st': $(last "$w/stop_signal_stop.err")"
      moat rm -f vsig >/dev/null 2>&1
      return
    fi
  done
  moat rm -f vsig >/dev/null 2>&1
  pass stop_signal
}

# `moat create --attach`: the sandbox lives while its creator does; SIGKILL of the creator stops it
# (stop reason "attached: its creator went away") and leaves no VM process behind.
case_attach() {
  moat create --attach vatt --isolation vm --rootfs /opt/rootfs >"$w/attach.out" 2>"$w/attach.err" &
  creator=$!
  # It prints the name once the sandbox is up (its state says running from the start).
  i=0
  while ! grep -qx vatt "$w/attach.out" 2>/dev/null && kill -0 "$creator" 2>/dev/null &&
    [ $i -lt 120 ]; do
    sleep 1
    i=$((i + 1))
  done
  run attach_exec 60 moat exec vatt -- echo attached-up
  if ! grep -qx attached-up "$w/attach_exec.out"; then
    fail attach "an exec in the attached sandbox: exit $rc, $(last "$w/attach_exec.err")"
    kill -9 "$creator" 2>/dev/null
    moat rm -f vatt >/dev/null 2>&1
    return
  fi
  vmpid=$(pid_of vatt)
  kill -9 "$creator"
  wait "$creator" 2>/dev/null
  i=0
  while [ "$(status_of vatt)" = running ] && [ $i -lt 120 ]; do
    sleep 1
    i=$((i + 1))
  done
  st=$(status_of vatt)
  reason=$(moat inspect vatt 2>/dev/null | sed -n 's/^ *"stop_reason": "\(.*\)",*$/\1/p')
  i=0
  while [ -n "$vmpid" ] && kill -0 "$vmpid" 2>/dev/null && [ $i -lt 60 ]; do
    sleep 1
    i=$((i + 1))
  done
  left=no
  [ -n "$vmpid" ] && kill -0 "$vmpid" 2>/dev/null && left=yes
  moat rm -f vatt >/dev/null 2>&1
  if [ "$st" = stopped ] && echo "$reason" | grep -q "creator went away" && [ "$left" = no ]; then
    pass attach
  else
    fail attach "after SIGKILL of the creator: status '$st', stop reason '$reason', sandbox process $vmpid left: $left"
  fi
}

all="kvm doctor run_echo exit_code stdin_cat rootfs image vm_seccomp rootless_vm leftovers create exec fs_relay pty logs conformance stop conformance_host_root crashed boot_fail_rootfs boot_fail_agentd net_none net_allow net_public net_dns net_publish net_root"
all="$all volume volume_quota patch stats cp logs_json port_forward start drain volume_rm"
all="$all stop_signal attach"
cases=${*:-$all}
for c in $cases; do
  echo
  echo "==== case $c at $(cut -d' ' -f1 /proc/uptime) s"
  case " $all " in
    *" $c "*) "case_$c" ;;
    *) fail "$c" "no such case" ;;
  esac
done
echo "==== suite done at $(cut -d' ' -f1 /proc/uptime) s"
