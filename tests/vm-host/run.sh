#!/usr/bin/env bash
# The VM backend's end-to-end suite, run one level down in a nested "test host" VM.
#
# This machine's /dev/kvm may be KVM-PVM, which cannot boot a guest kernel (../shared/DESIGN.md).
# So this script boots a test host under QEMU's pure software emulation (TCG, -cpu max, which
# emulates AMD SVM with nested paging); a stock Debian cloud kernel there loads kvm-amd and offers
# a real /dev/kvm, and moat boots its libkrun microVMs inside it. Software emulation: the figures
# it prints are for orientation, never performance.
#
# Everything it downloads comes from the Debian archive with `apt-get download` + `dpkg -x` into
# target/vm-host/ (reused on the next run); nothing is installed on the system and the host's apt
# state is not touched (a private apt configuration under target/vm-host/apt lists the host's
# release and Debian sid, sid pinned to 100 so only libkrunfw5 comes from it).
#
# Prints one line per case and a last line `N passed, N failed`; exits 1 on any failure, and when
# the test host cannot be built or booted it says why (never a silent skip).
#
# Environment:
#   MOAT_BIN_DIR          use prebuilt `moat` and `moat-conformance` from this directory
#   MOAT_AGENTD_STATIC_BIN  use this prebuilt static moat-agentd (else agentd/build-static.sh)
#   MOAT_VM_HOST_DIR      cache and work directory (default target/vm-host)
#   MOAT_VM_HOST_TIMEOUT  seconds the test host may run (default 660)
#   MOAT_VM_HOST_STALL    seconds without a heartbeat before the test host counts as hung (90)
#   MOAT_VM_HOST_CASES    space-separated case names to run (default: all)
#   MOAT_VM_HOST_KVM_AMD_ARGS  parameters for the test host's kvm-amd module (default none), for
#                         experiments: `npt=0` (shadow paging) was tried and left guests hung
#   MOAT_VM_HOST_CPU      qemu's -cpu (default max), for experiments: see README.md
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/tests/vm-host
vh=${MOAT_VM_HOST_DIR:-$root/target/vm-host}
host_timeout=${MOAT_VM_HOST_TIMEOUT:-660}
stall_limit=${MOAT_VM_HOST_STALL:-90}
qemu_cpu=${MOAT_VM_HOST_CPU:-max}
mkdir -p "$vh"
vh=$(cd "$vh" && pwd)
t_start=$(date +%s)

stage="start"
say() { printf 'vm-host: %s\n' "$*" >&2; }
# The test host could not be built or booted: say why, count it as a failure, stop.
cannot() {
  echo "FAIL vm-host: the test host could not be built or booted: $*"
  echo "0 passed, 1 failed"
  exit 1
}
trap 'cannot "step \"$stage\" failed (run.sh line $LINENO); its output is above"' ERR

# ---------------------------------------------------------------------------------------------
stage="build moat, moat-conformance and the static moat-agentd"
if [ -n "${MOAT_BIN_DIR:-}" ]; then
  bin_dir=$(cd "$MOAT_BIN_DIR" && pwd)
  say "using prebuilt moat and moat-conformance from $bin_dir"
else
  # Debug builds: CI's `cargo test` has already built them, so this is nearly free, and the suite
  # is dominated by emulated microVM boots, not by moat's own code.
  say "building moat and moat-conformance (debug)"
  nice cargo build --locked --workspace --all-features --bins >&2
  bin_dir=$root/target/debug
fi
for b in moat moat-conformance; do
  [ -x "$bin_dir/$b" ] || cannot "$bin_dir/$b is missing"
done
if [ -n "${MOAT_AGENTD_STATIC_BIN:-}" ]; then
  agentd_static=$MOAT_AGENTD_STATIC_BIN
else
  say "building the static moat-agentd (agentd/build-static.sh)"
  agentd_static=$root/$(nice bash agentd/build-static.sh)
fi
[ -x "$agentd_static" ] || cannot "static moat-agentd $agentd_static is missing"

# ---------------------------------------------------------------------------------------------
stage="private apt configuration"
apt_dir=$vh/apt
mkdir -p "$apt_dir"/etc/{apt.conf.d,preferences.d,sources.list.d} "$apt_dir"/lists/partial \
  "$apt_dir"/cache/archives/partial
# shellcheck disable=SC1091
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || cannot "/etc/os-release names no VERSION_CODENAME (a Debian host is needed)"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || cannot "$keyring is missing (package debian-archive-keyring)"
mirror=${MOAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${MOAT_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cat >"$apt_dir/etc/sources.list.new" <<EOF
deb [signed-by=$keyring] $mirror $codename main
deb [signed-by=$keyring] $mirror $codename-updates main
deb [signed-by=$keyring] $security $codename-security main
deb [signed-by=$keyring] $mirror sid main
EOF
mv "$apt_dir/etc/sources.list.new" "$apt_dir/etc/sources.list"
cat >"$apt_dir/etc/preferences" <<EOF
Package: *
Pin: release n=sid
Pin-Priority: 100
EOF
apt_opts=(
  -o "Dir::Etc=$apt_dir/etc"
  -o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list"
  -o "Dir::Etc::sourceparts=$apt_dir/etc/sources.list.d"
  -o "Dir::Etc::preferences=$apt_dir/etc/preferences"
  -o "Dir::Etc::preferencesparts=$apt_dir/etc/preferences.d"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=$(id -un)"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
)
papt_get() { apt-get "${apt_opts[@]}" "$@"; }
papt_cache() { apt-cache "${apt_opts[@]}" "$@"; }

# Refresh the private package lists when they are missing or a day old; a failed refresh with
# usable lists already there goes on with them (and says so).
stamp_lists=$apt_dir/lists/.updated
if [ ! -f "$stamp_lists" ] || [ -n "$(find "$stamp_lists" -mmin +1440)" ]; then
  stage="apt-get update (private lists: $codename + sid)"
  say "refreshing the private package lists ($codename, $codename-updates, $codename-security, sid)"
  if papt_get -qq update >&2; then
    touch "$stamp_lists"
  elif [ -f "$stamp_lists" ]; then
    say "apt-get update failed; going on with the lists from $(date -r "$stamp_lists" -u +%FT%TZ)"
  else
    cannot "apt-get update of the private lists failed (is deb.debian.org reachable?)"
  fi
fi

# ---------------------------------------------------------------------------------------------
stage="resolve the package versions"
# The kernel: the versioned package the metapackage currently depends on.
kpkg=$(papt_cache depends linux-image-cloud-amd64 2>/dev/null |
  awk '/^ *Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kpkg" ] || cannot "cannot resolve the versioned kernel package from linux-image-cloud-amd64's Depends"
kver=${kpkg#linux-image-}
# qemu-system-x86 and whatever of its dependencies this host lacks.
qemu_pkgs=$(papt_get install -s --no-install-recommends qemu-system-x86 2>/dev/null |
  awk '/^Inst /{print $2}')
[ -n "$qemu_pkgs" ] || [ -x /usr/bin/qemu-system-x86_64 ] ||
  cannot "apt-get install -s qemu-system-x86 resolved nothing to download"
# busybox: the host's busybox-static if installed, else the package.
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' &&
  [ -x /bin/busybox ]; then
  host_busybox=/bin/busybox
  bb_pkg=
else
  host_busybox=
  bb_pkg=busybox-static
fi
pkgs=($qemu_pkgs "$kpkg" libkrunfw5 $bb_pkg)
say "packages: ${pkgs[*]}"

# ---------------------------------------------------------------------------------------------
stage="download and extract the packages"
debs=$vh/debs
x=$vh/root
mkdir -p "$debs"
# One apt-cache call for every candidate version (each call loads all the lists: seconds).
declare -A candidate=()
while read -r p v; do
  candidate[$p]=$v
done < <(papt_cache policy "${pkgs[@]}" | awk '/^[^ ].*:$/{sub(/:$/, ""); p = $0} /^  Candidate:/{print p, $2}')
need=()
wanted=()
for p in "${pkgs[@]}"; do
  v=${candidate[$p]:-}
  [ -n "$v" ] && [ "$v" != "(none)" ] || cannot "no candidate version for $p"
  f="${p}_${v//:/%3a}"
  if ! compgen -G "$debs/${f}_*.deb" >/dev/null; then
    need+=("$p=$v")
  fi
  wanted+=("$f")
done
if [ ${#need[@]} -gt 0 ]; then
  say "downloading ${#need[@]} package(s) into $debs"
  (cd "$debs" && papt_get -qq download "${need[@]}" >&2) ||
    cannot "apt-get download ${need[*]} failed"
fi
# The extracted tree holds exactly this run's packages: a changed set (a new kernel, a qemu
# update) re-extracts from scratch, and superseded .debs are dropped.
set_files=()
for f in "${wanted[@]}"; do
  d=$(compgen -G "$debs/${f}_*.deb" | head -n 1)
  [ -n "$d" ] || cannot "the download of ${f%%_*} left no .deb in $debs"
  set_files+=("$(basename "$d")")
done
printf '%s\n' "${set_files[@]}" | sort >"$vh/debs.wanted"
for d in "$debs"/*.deb; do
  grep -qxF "$(basename "$d")" "$vh/debs.wanted" || rm -f "$d"
done
if ! cmp -s "$vh/debs.wanted" "$x/.debs" 2>/dev/null; then
  say "extracting ${#set_files[@]} package(s) into $x"
  rm -rf "$x"
  mkdir -p "$x"
  for b in "${set_files[@]}"; do
    dpkg -x "$debs/$b" "$x"
  done
  cp "$vh/debs.wanted" "$x/.debs"
fi

qemu_bin=$x/usr/bin/qemu-system-x86_64
[ -x "$qemu_bin" ] || qemu_bin=/usr/bin/qemu-system-x86_64
[ -x "$qemu_bin" ] || cannot "qemu-system-x86_64 was not extracted"
vmlinuz=$x/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || cannot "kernel $vmlinuz was not extracted"
mods=$x/lib/modules/$kver/kernel
krunfw=$(find "$x/usr/lib" -name 'libkrunfw.so.5*' -type f | sort | tail -n 1)
[ -n "$krunfw" ] || cannot "libkrunfw.so.5 was not extracted from libkrunfw5"
busybox=${host_busybox:-$x/bin/busybox}
[ -x "$busybox" ] || cannot "busybox is missing ($busybox)"
krunfw_ver=${candidate[libkrunfw5]}
ld_path=$x/usr/lib/x86_64-linux-gnu:$x/lib/x86_64-linux-gnu
qemu_ver=$(LD_LIBRARY_PATH=$ld_path "$qemu_bin" --version 2>&1 | head -n 1) ||
  cannot "$qemu_bin does not run: $qemu_ver"
say "kernel $kver; libkrunfw5 $krunfw_ver; $qemu_ver"

# ---------------------------------------------------------------------------------------------
stage="assemble the test host's initramfs"
r=$vh/initramfs
rm -rf "$r"
mkdir -p "$r"/{bin,sbin,proc,sys,dev,tmp,run,etc,mods,opt/moat,lib/x86_64-linux-gnu,lib64,root}
cp "$busybox" "$r/bin/busybox"
ln -s busybox "$r/bin/sh"
for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd; do
  src=$(ls "$mods/$m".ko* 2>/dev/null | head -n 1)
  [ -n "$src" ] || cannot "module $m is missing from $mods"
  case $src in
    *.xz) xz -dc "$src" >"$r/mods/$(basename "$m").ko" ;;
    *.zst) zstd -qdc "$src" >"$r/mods/$(basename "$m").ko" ;;
    *) cp "$src" "$r/mods/" ;;
  esac
done
# Debug binaries carry hundreds of MiB of debug info: the test host gets them stripped.
for b in moat moat-conformance; do
  objcopy --strip-debug "$bin_dir/$b" "$r/opt/moat/$b"
done
objcopy --strip-debug "$agentd_static" "$r/opt/moat/moat-agentd-static"
# The namespace backend and `moat` look for moat-agentd next to moat: the static one serves.
ln -s moat-agentd-static "$r/opt/moat/moat-agentd"
cp -L "$krunfw" "$r/opt/libkrunfw.so.5"
# util-linux's script(1) gives `moat exec -t` a terminal (busybox has none), and moat runs
# util-linux's unshare (busybox's lacks options it uses): both from this host, into /usr/bin,
# which the test host's PATH puts before busybox's /bin.
mkdir -p "$r/usr/bin"
for t in script unshare; do
  t_bin=$(command -v "$t" || true)
  [ -n "$t_bin" ] || cannot "$t is missing on this host (util-linux / bsdutils)"
  cp -L "$t_bin" "$r/usr/bin/$t"
done
for b in "$r/opt/moat/moat" "$r/opt/moat/moat-conformance" "$r/usr/bin/script" "$r/usr/bin/unshare"; do
  for l in $(ldd "$b" | awk '/=> \//{print $3}'); do
    cp -L "$l" "$r/lib/x86_64-linux-gnu/"
  done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
echo vmhost >"$r/etc/hostname"
# A small root filesystem for --rootfs cases: static busybox with every applet, a marker file.
rf=$r/opt/rootfs
mkdir -p "$rf"/{bin,sbin,etc,proc,sys,dev,tmp,run,root}
cp "$busybox" "$rf/bin/busybox"
for a in $("$busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$rf/bin/$a"
done
cp "$r/etc/passwd" "$r/etc/group" "$rf/etc/"
echo "moat vm-host test rootfs" >"$rf/etc/moat-test-marker"
# An empty root: a guest that cannot boot (no programs at all).
mkdir -p "$r/opt/emptyroot"
cp "$here/init.sh" "$r/init"
cp "$here/suite.sh" "$r/suite.sh"
chmod 755 "$r/init" "$r/suite.sh"
printf '%s\n' "${MOAT_VM_HOST_CASES:-}" >"$r/etc/vmtest-cases"
printf '%s\n' "${MOAT_VM_HOST_KVM_AMD_ARGS-}" >"$r/etc/vmtest-kvm-amd-args"
printf 'kernel=%s libkrunfw5=%s\n' "$kver" "$krunfw_ver" >"$r/etc/vmtest-versions"
initrd=$vh/initrd.gz
(cd "$r" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1 >"$initrd.new")
mv "$initrd.new" "$initrd"
say "initramfs: $(du -h "$initrd" | cut -f1)"

# ---------------------------------------------------------------------------------------------
stage="boot the test host"
run_dir=$vh/run
mkdir -p "$run_dir"
console=$run_dir/console.log
results=$run_dir/results.log
: >"$console"
: >"$results"
t_boot=$(date +%s)
say "booting the test host (QEMU TCG, timeout ${host_timeout}s); console: $console"
# From here on a failing command is a result to read, not a setup failure.
trap - ERR
set +e
LD_LIBRARY_PATH=$ld_path timeout --kill-after=10 "$host_timeout" "$qemu_bin" \
  -L "$x/usr/share/qemu" -L "$x/usr/share/seabios" -L "$x/usr/lib/ipxe/qemu" \
  -M q35 -accel tcg -cpu "$qemu_cpu" -smp 2 -m 2048 \
  -display none -monitor none -no-reboot \
  -serial "file:$console" -serial "file:$results" \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 panic=-1 no_timer_check mitigations=off quiet loglevel=4" \
  >"$run_dir/qemu.out" 2>&1 &
qemu_pid=$!
# The suite ends with its DONE line. A test host that then does not power off (seen once: its
# serial console stalled) is stopped after a grace period rather than waited for until the
# timeout: the results are complete, and the note below says what happened.
# The test host also writes a heartbeat every 10 s. When none comes for $stall_limit s, the test
# host has stopped responding (seen once in CI: nothing on either serial port after a case began,
# while that case has its own 120 s limit inside). It is stopped then, rather than at the timeout,
# and the report says how busy qemu was meanwhile: a hung or spinning emulated kernel, not a slow
# case.
rm -f "$run_dir/stopped-after-done" "$run_dir/stalled"
# qemu's user+system CPU time in clock ticks (it is the child of `timeout`).
qemu_ticks() {
  local pid
  pid=$(cat "/proc/$1/task/$1/children" 2>/dev/null | awk '{ print $1 }')
  [ -n "$pid" ] && awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null
}
(
  last_size=-1
  last_change=$(date +%s)
  ticks_at_change=$(qemu_ticks "$qemu_pid")
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if grep -q '^VMTEST DONE' "$results" 2>/dev/null; then
      for _ in $(seq 30); do
        kill -0 "$qemu_pid" 2>/dev/null || exit 0
        sleep 1
      done
      : >"$run_dir/stopped-after-done"
      kill -TERM "$qemu_pid" 2>/dev/null
      exit 0
    fi
    size=$(stat -c %s "$results" 2>/dev/null || echo 0)
    now=$(date +%s)
    if [ "$size" != "$last_size" ]; then
      last_size=$size
      last_change=$now
      ticks_at_change=$(qemu_ticks "$qemu_pid")
    elif [ $((now - last_change)) -ge "$stall_limit" ]; then
      ticks=$(qemu_ticks "$qemu_pid")
      busy=
      if [ -n "$ticks" ] && [ -n "$ticks_at_change" ]; then
        hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
        busy="; qemu used $(((ticks - ticks_at_change) * 100 / hz / (now - last_change)))% of one core meanwhile"
      fi
      echo "no heartbeat for $((now - last_change)) s$busy" >"$run_dir/stalled"
      kill -TERM "$qemu_pid" 2>/dev/null
      exit 0
    fi
    sleep 2
  done
) &
watch_pid=$!
# Print the cases as they come back.
# (sed -u, not tr, strips the carriage returns: a block-buffered tr would hold the lines back.)
tail -n +1 -F --pid="$qemu_pid" "$results" 2>/dev/null |
  sed -un 's/\r$//; s/^VMTEST \(PASS\|FAIL\|INFO\) /\1 /p' &
tail_pid=$!
wait "$qemu_pid"
qemu_rc=$?
wait "$tail_pid" 2>/dev/null
wait "$watch_pid" 2>/dev/null
set -e
t_end=$(date +%s)

# ---------------------------------------------------------------------------------------------
tr -d '\r' <"$results" >"$run_dir/results.txt"
passed=$(grep -c '^VMTEST PASS ' "$run_dir/results.txt" || true)
failed=$(grep -c '^VMTEST FAIL ' "$run_dir/results.txt" || true)
problem=
if [ -e "$run_dir/stopped-after-done" ] && grep -q '^VMTEST DONE' "$run_dir/results.txt"; then
  echo "vm-host: note: the suite finished but the test host did not power off within 30 s; qemu was stopped (status $qemu_rc)"
elif [ -e "$run_dir/stalled" ]; then
  running=$(tr -d '\r' <"$console" | sed -n 's/^==== case \([a-z_]*\) at .*/\1/p' | tail -n 1)
  problem="the test host stopped responding during case ${running:-(none yet)}: $(cat "$run_dir/stalled")"
elif [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  problem="the test host did not finish within ${host_timeout}s (timeout)"
elif [ "$qemu_rc" != 0 ]; then
  problem="qemu exited with status $qemu_rc: $(tail -n 5 "$run_dir/qemu.out" | tr '\n' ' ')"
elif ! grep -q '^VMTEST DONE' "$run_dir/results.txt"; then
  problem="the test host stopped before the suite finished"
fi
if [ -n "$problem" ]; then
  echo "FAIL vm-host: $problem"
  failed=$((failed + 1))
  echo "--- last lines of the test host's console ($console):"
  tr -d '\r' <"$console" | tail -n 40
  echo "---"
fi
# Each failed case's evidence: its part of the test host's console.
for c in $(sed -n 's/^VMTEST FAIL \([a-z_]*\):.*/\1/p' "$run_dir/results.txt"); do
  echo "--- evidence for $c (from $console):"
  tr -d '\r' <"$console" | awk -v c="$c" '
    /^==== case / { on = ($3 == c) }
    on { print "  | " $0 }' | head -n 200
done
[ "$failed" = 0 ] || echo "(the whole console: $console; sandbox logs are inside the test host)"
echo "timing: $((t_boot - t_start)) s to build and assemble, $((t_end - t_boot)) s in the test host"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
