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
  run conformance 400 moat-conformance run --socket "$sock" --timeout 60
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
  run conformance_host_root 400 moat-conformance run --socket "$sock" --timeout 60
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

all="kvm doctor run_echo exit_code stdin_cat rootfs image vm_seccomp rootless_vm leftovers create exec fs_relay pty logs conformance stop conformance_host_root crashed boot_fail_rootfs boot_fail_agentd net_none net_allow net_public net_dns net_publish net_root"
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
