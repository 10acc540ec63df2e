#!/usr/bin/env bash
# The VM backend's end-to-end suite, run one level down in a nested "test host" VM.
#
# This machine's /dev/kvm may be KVM-PVM, which cannot boot a guest kernel (../shared/DESIGN.md).
# So this script boots a test host under QEMU's pure software emulation (TCG, -cpu max, which
# emulates AMD SVM with nested paging); a stock Debian cloud kernel there loads kvm-amd and offers
# a real /dev/kvm, and moat boots its libkrun microVMs inside it. Software emulation: the figures
# it prints are for orientation, never performance.
#
# Everything it downloads comes from the Debian archive, through the mirrors this host's own apt
# configuration names, with `apt-get download` + `dpkg -x` into target/vm-host/ (reused on the next
# run); nothing is installed on the system and the host's apt state is not touched. Two private
# apt configurations: target/vm-host/apt (the host's release for the kernel and busybox, sid pinned
# to 100 for libkrunfw5) and target/vm-host/apt-trixie (trixie alone, with an empty dpkg status, so
# apt resolves qemu-system-x86's whole closure, glibc included; qemu then runs through that tree's
# own dynamic loader). Trixie's QEMU 10.0 ran the suite clean where bookworm's 7.2 faulted: see
# README.md.
#
# Prints one line per case and a last line `N passed, N failed`; exits 1 on any failure, and when
# the test host cannot be built or booted it says why (never a silent skip).
#
# Environment:
#   MOAT_BIN_DIR          use prebuilt `moat` and `moat-conformance` from this directory
#   MOAT_AGENTD_STATIC_BIN  use this prebuilt static moat-agentd (else agentd/build-static.sh)
#   MOAT_VM_HOST_DIR      cache and work directory (default target/vm-host)
#   MOAT_VM_HOST_TIMEOUT  seconds the test host may run (default 1200)
#   MOAT_VM_HOST_STALL    seconds without a heartbeat before the test host counts as hung (90)
#   MOAT_VM_HOST_CASES    space-separated case names to run (default: all)
#   MOAT_VM_HOST_KVM_AMD_ARGS  parameters for the test host's kvm-amd module (default none), for
#                         experiments: `npt=0` (shadow paging) was tried and left guests hung
#   MOAT_VM_HOST_CPU      qemu's -cpu (default max), for experiments: see README.md
#   MOAT_VM_HOST_QEMU_SUITE  the Debian suite qemu comes from (default trixie), for experiments
#   MOAT_DEBIAN_MIRROR, MOAT_DEBIAN_SECURITY_MIRROR  instead of the mirrors the host's apt uses
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
here=$root/tests/vm-host
vh=${MOAT_VM_HOST_DIR:-$root/target/vm-host}
host_timeout=${MOAT_VM_HOST_TIMEOUT:-1200}
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
stage="private apt configurations"
# shellcheck disable=SC1091
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || cannot "/etc/os-release names no VERSION_CODENAME (a Debian host is needed)"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || cannot "$keyring is missing (package debian-archive-keyring)"
# The Debian mirrors this host's own apt uses (deb822 .sources files, or one-line sources.list
# entries): the repository names no package host.
host_uris=$( {
  sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
  sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
} | grep -E '^(https?|file)://' || true)
mirror=${MOAT_DEBIAN_MIRROR:-$(echo "$host_uris" | grep -v security | head -n 1)}
security=${MOAT_DEBIAN_SECURITY_MIRROR:-$(echo "$host_uris" | grep security | head -n 1)}
[ -n "$mirror" ] ||
  cannot "this host's apt configuration names no Debian mirror (set MOAT_DEBIAN_MIRROR)"
# The suite qemu comes from: trixie's QEMU 10.0 ran the suite clean where bookworm's 7.2 faulted
# (README.md, "Why trixie's QEMU").
qemu_suite=${MOAT_VM_HOST_QEMU_SUITE:-trixie}

# A private apt configuration under $1 (its own sources list, lists, cache and, with
# status=empty, an empty dpkg status, so apt believes nothing is installed and resolves a
# package's whole dependency closure). Leaves apt-get's options in the array `opts`.
# Usage: private_apt DIR STATUS SOURCE-LINE...
private_apt() {
  local dir=$1 status=$2
  shift 2
  mkdir -p "$dir"/etc/{apt.conf.d,preferences.d,sources.list.d} "$dir"/lists/partial \
    "$dir"/cache/archives/partial
  printf '%s\n' "$@" >"$dir/etc/sources.list"
  : >>"$dir/etc/preferences"
  opts=(
    -o "Dir::Etc=$dir/etc"
    -o "Dir::Etc::sourcelist=$dir/etc/sources.list"
    -o "Dir::Etc::sourceparts=$dir/etc/sources.list.d"
    -o "Dir::Etc::preferences=$dir/etc/preferences"
    -o "Dir::Etc::preferencesparts=$dir/etc/preferences.d"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache=$dir/cache"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=$(id -un)"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  )
  if [ "$status" = empty ]; then
    : >"$dir/status"
    opts+=(-o "Dir::State::status=$dir/status")
  fi
  # Refresh the lists when they are missing, a day old, or the sources changed; a failed refresh
  # with usable lists already there goes on with them (and says so).
  local stamp=$dir/lists/.updated
  if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ] ||
    ! cmp -s "$dir/etc/sources.list" "$stamp"; then
    say "refreshing the package lists of $dir"
    if apt-get "${opts[@]}" -qq update >&2; then
      cp "$dir/etc/sources.list" "$stamp"
    elif [ -f "$stamp" ]; then
      say "apt-get update failed; going on with the lists from $(date -r "$stamp" -u +%FT%TZ)"
    else
      cannot "apt-get update of the private lists in $dir failed (is $mirror reachable?)"
    fi
  fi
}
# The kernel and busybox from this host's release, libkrunfw5 from sid (pinned low, so only what
# exists nowhere else comes from it); the host's dpkg status, as only named packages are fetched.
apt_dir=$vh/apt
sec_line=
[ -n "$security" ] && sec_line="deb [signed-by=$keyring] $security $codename-security main"
mkdir -p "$apt_dir/etc"
printf 'Package: *\nPin: release n=sid\nPin-Priority: 100\n' >"$apt_dir/etc/preferences"
private_apt "$apt_dir" host \
  "deb [signed-by=$keyring] $mirror $codename main" \
  "deb [signed-by=$keyring] $mirror $codename-updates main" \
  ${sec_line:+"$sec_line"} \
  "deb [signed-by=$keyring] $mirror sid main"
host_apt=("${opts[@]}")
# qemu-system-x86 with its whole closure, glibc included, from $qemu_suite alone.
qemu_apt_dir=$vh/apt-$qemu_suite
qsec_line=
[ -n "$security" ] && qsec_line="deb [signed-by=$keyring] $security $qemu_suite-security main"
private_apt "$qemu_apt_dir" empty \
  "deb [signed-by=$keyring] $mirror $qemu_suite main" \
  "deb [signed-by=$keyring] $mirror $qemu_suite-updates main" \
  ${qsec_line:+"$qsec_line"}
qemu_apt=("${opts[@]}")

# ---------------------------------------------------------------------------------------------
stage="resolve the package versions"
# The kernel: the versioned package the metapackage currently depends on.
kpkg=$(apt-cache "${host_apt[@]}" depends linux-image-cloud-amd64 2>/dev/null |
  awk '/^ *Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$kpkg" ] || cannot "cannot resolve the versioned kernel package from linux-image-cloud-amd64's Depends"
kver=${kpkg#linux-image-}
# busybox: the host's busybox-static if installed, else the package.
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' &&
  [ -x /bin/busybox ]; then
  host_busybox=/bin/busybox
  bb_pkg=
else
  host_busybox=
  bb_pkg=busybox-static
fi
# One apt-cache call for every candidate version (each call loads all the lists: seconds).
host_pkgs=($kpkg libkrunfw5 $bb_pkg)
declare -A candidate=()
while read -r p v; do
  candidate[$p]=$v
done < <(apt-cache "${host_apt[@]}" policy "${host_pkgs[@]}" |
  awk '/^[^ ].*:$/{sub(/:$/, ""); p = $0} /^  Candidate:/{print p, $2}')
host_pins=()
for p in "${host_pkgs[@]}"; do
  v=${candidate[$p]:-}
  [ -n "$v" ] && [ "$v" != "(none)" ] || cannot "no candidate version for $p"
  host_pins+=("$p=$v")
done
# qemu's closure as apt resolves it against an empty system: package=version, one a line.
mapfile -t qemu_pins < <(apt-get "${qemu_apt[@]}" install -s --no-install-recommends qemu-system-x86 2>/dev/null |
  awk '/^Inst /{v = $3; sub(/^\(/, "", v); print $2 "=" v}')
qemu_ver=
for p in "${qemu_pins[@]}"; do
  case $p in qemu-system-x86=*) qemu_ver=${p#*=} ;; esac
done
[ -n "$qemu_ver" ] || cannot "apt-get install -s qemu-system-x86 ($qemu_suite) resolved no qemu-system-x86"
say "kernel $kpkg, libkrunfw5 ${candidate[libkrunfw5]}, qemu-system-x86 $qemu_ver ($qemu_suite, ${#qemu_pins[@]} packages)"

# ---------------------------------------------------------------------------------------------
stage="download and extract the packages"
# fetch_tree APT_ARRAY_NAME DEBS DEST PKG=VER...: downloads what is missing into DEBS and extracts
# exactly these packages into DEST. A changed set (a new kernel, a qemu update) re-extracts from
# scratch, and superseded .debs are dropped; an unchanged one is reused as it is.
fetch_tree() {
  local -n aopts=$1
  local debs=$2 dest=$3
  shift 3
  local need=() files=() pin p v f d
  mkdir -p "$debs"
  for pin in "$@"; do
    p=${pin%%=*}
    v=${pin#*=}
    f="${p}_${v//:/%3a}"
    compgen -G "$debs/${f}_*.deb" >/dev/null || need+=("$pin")
    files+=("$f")
  done
  if [ ${#need[@]} -gt 0 ]; then
    say "downloading ${#need[@]} package(s) into $debs"
    (cd "$debs" && apt-get "${aopts[@]}" -qq download "${need[@]}" >&2) ||
      cannot "apt-get download ${need[*]} failed"
  fi
  local wanted=()
  for f in "${files[@]}"; do
    d=$(compgen -G "$debs/${f}_*.deb" | head -n 1)
    [ -n "$d" ] || cannot "the download of ${f%%_*} left no .deb in $debs"
    wanted+=("$(basename "$d")")
  done
  printf '%s\n' "${wanted[@]}" | sort >"$debs.wanted"
  for d in "$debs"/*.deb; do
    grep -qxF "$(basename "$d")" "$debs.wanted" || rm -f "$d"
  done
  if ! cmp -s "$debs.wanted" "$dest/.debs" 2>/dev/null; then
    say "extracting ${#wanted[@]} package(s) into $dest"
    rm -rf "$dest"
    mkdir -p "$dest"
    for d in "${wanted[@]}"; do
      dpkg -x "$debs/$d" "$dest"
    done
    cp "$debs.wanted" "$dest/.debs"
  fi
}
x=$vh/root
fetch_tree host_apt "$vh/debs" "$x" "${host_pins[@]}"
q=$vh/qemu-$qemu_suite
fetch_tree qemu_apt "$q/debs" "$q/root" "${qemu_pins[@]}"

# qemu runs through its own tree's dynamic loader and libraries: nothing of this host's glibc.
qemu_root=$q/root
# (A merged-/usr release ships the loader under usr/lib; older ones, bookworm among them, under lib.)
qemu_ld=
for l in usr/lib/x86_64-linux-gnu lib/x86_64-linux-gnu lib64; do
  [ -e "$qemu_root/$l/ld-linux-x86-64.so.2" ] && { qemu_ld=$qemu_root/$l/ld-linux-x86-64.so.2; break; }
done
qemu_bin=$qemu_root/usr/bin/qemu-system-x86_64
[ -x "$qemu_bin" ] && [ -n "$qemu_ld" ] || cannot "qemu-system-x86_64 or its loader was not extracted into $qemu_root"
# QEMU_MODULE_DIR: where a build with modular accelerators (bookworm's: accel-tcg-x86_64.so) finds them.
qemu=(env "QEMU_MODULE_DIR=$qemu_root/usr/lib/x86_64-linux-gnu/qemu"
  "$qemu_ld" --library-path "$qemu_root/usr/lib/x86_64-linux-gnu:$qemu_root/lib/x86_64-linux-gnu"
  "$qemu_bin" -L "$qemu_root/usr/share/qemu" -L "$qemu_root/usr/share/seabios"
  -L "$qemu_root/usr/lib/ipxe/qemu")
vmlinuz=$x/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || cannot "kernel $vmlinuz was not extracted"
mods=$x/lib/modules/$kver/kernel
krunfw=$(find "$x/usr/lib" -name 'libkrunfw.so.5*' -type f | sort | tail -n 1)
[ -n "$krunfw" ] || cannot "libkrunfw.so.5 was not extracted from libkrunfw5"
busybox=${host_busybox:-$x/bin/busybox}
[ -x "$busybox" ] || cannot "busybox is missing ($busybox)"
krunfw_ver=${candidate[libkrunfw5]}
qemu_banner=$("${qemu[@]}" --version 2>&1 | head -n 1) || cannot "$qemu_bin does not run: $qemu_banner"
say "kernel $kver; libkrunfw5 $krunfw_ver; $qemu_banner"

# ---------------------------------------------------------------------------------------------
stage="assemble the test host's initramfs"
r=$vh/initramfs
rm -rf "$r"
mkdir -p "$r"/{bin,sbin,proc,sys,dev,tmp,run,etc,mods,opt/moat,lib/x86_64-linux-gnu,lib64,root}
cp "$busybox" "$r/bin/busybox"
ln -s busybox "$r/bin/sh"
# overlay: the VM process stacks an image's layers with overlayfs (the `image` case); loop: a
# volume with --quota is an ext4 image loop-mounted (the `volume_quota` case; ext4 is built in).
for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd fs/overlayfs/overlay drivers/block/loop; do
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
# util-linux's unshare (busybox's lacks options it uses), and setpriv runs the rootless case as
# an unprivileged user: all from this host, into /usr/bin,
# which the test host's PATH puts before busybox's /bin.
mkdir -p "$r/usr/bin"
for t in script unshare setpriv; do
  t_bin=$(command -v "$t" || true)
  [ -n "$t_bin" ] || cannot "$t is missing on this host (util-linux / bsdutils)"
  cp -L "$t_bin" "$r/usr/bin/$t"
done
# mkfs.ext4 (e2fsprogs) makes a --quota volume's image (`moat volume create --quota`).
mkfs_bin=$(command -v mkfs.ext4 || true)
[ -n "$mkfs_bin" ] || cannot "mkfs.ext4 is missing on this host (e2fsprogs)"
cp -L "$mkfs_bin" "$r/usr/bin/mkfs.ext4"
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$r/etc/"
for b in "$r/opt/moat/moat" "$r/opt/moat/moat-conformance" "$r/usr/bin/script" "$r/usr/bin/unshare" "$r/usr/bin/setpriv" "$r/usr/bin/mkfs.ext4"; do
  for l in $(ldd "$b" | awk '/=> \//{print $3}'); do
    cp -L "$l" "$r/lib/x86_64-linux-gnu/"
  done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
# The guest network (docs/NETWORK.md): the tools the router namespace uses, from this host, with
# their libraries; and the kernel modules its ruleset and wiring need, with their dependencies
# (each module's own `depends=` field: the package ships no modules.dep), loaded dependencies
# first, listed in load order in mods/net.list for /init.
for t in slirp4netns nft ip nsenter; do
  t_bin=$(command -v "$t" || true)
  [ -n "$t_bin" ] || cannot "$t is missing on this host (the guest network needs it)"
  cp -L "$t_bin" "$r/usr/bin/$t"
  for l in $(ldd "$t_bin" | awk '/=> \//{print $3}'); do
    cp -L "$l" "$r/lib/x86_64-linux-gnu/"
  done
done
mkdir -p "$r/mods/net"
: >"$r/mods/net.list"
net_mod() {
  local src out dep
  grep -qx "$1" "$r/mods/net.list" && return
  src=$(find "$mods" \( -name "$1.ko" -o -name "$1.ko.*" \) | head -n 1)
  if [ -z "$src" ]; then
    grep -q "/$1\.ko\$" "$mods/../modules.builtin" || cannot "kernel module $1 is neither a module nor built in"
    return
  fi
  out=$r/mods/net/$1.ko
  case $src in
    *.xz) xz -dc "$src" >"$out" ;;
    *.zst) zstd -qdc "$src" >"$out" ;;
    *) cp "$src" "$out" ;;
  esac
  for dep in $(tr '\0' '\n' <"$out" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '); do
    net_mod "$dep"
  done
  echo "$1" >>"$r/mods/net.list"
}
for m in veth tun nf_tables nft_ct nft_nat nft_masq nft_chain_nat nft_connlimit; do
  net_mod "$m"
done
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
# The `image` case's store: an image built from the rootfs above, pulled here from a loopback
# registry (image-store.sh); the test host runs it from this warm store. A failure here fails
# that case, with the reason, rather than the whole run.
rm -f "$r/etc/vmtest-image" "$r/etc/vmtest-image-error"
if image_ref=$(bash "$here/image-store.sh" "$bin_dir/moat" "$rf" "$vh/image-home" 2>"$vh/image-store.log"); then
  mkdir -p "$r/opt/image-home"
  cp -a "$vh/image-home/images" "$r/opt/image-home/"
  echo "$image_ref" >"$r/etc/vmtest-image"
else
  tail -n 3 "$vh/image-store.log" | tr '\n' ' ' >"$r/etc/vmtest-image-error"
  say "the image case's store could not be prepared: $(cat "$r/etc/vmtest-image-error")"
fi
cp "$here/init.sh" "$r/init"
cp "$here/suite.sh" "$r/suite.sh"
chmod 755 "$r/init" "$r/suite.sh"
printf '%s\n' "${MOAT_VM_HOST_CASES:-}" >"$r/etc/vmtest-cases"
printf '%s\n' "${MOAT_VM_HOST_KVM_AMD_ARGS-}" >"$r/etc/vmtest-kvm-amd-args"
printf 'kernel=%s libkrunfw5=%s qemu=%s\n' "$kver" "$krunfw_ver" "$qemu_ver" >"$r/etc/vmtest-versions"
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
timeout --kill-after=10 "$host_timeout" "${qemu[@]}" \
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
# What the VM backend supports, as this run showed it: a feature reads "yes" when every case that
# proves it passed, "FAILED" when one failed, "not run" when its cases were not in this run. What
# moat does not build yet for a VM says so, rather than being left out of the table; what is built
# but has no case here names that (the third argument).
support() {
  local what=$1 cases=$2 verdict=yes c ran=0
  if [ -z "$cases" ]; then
    verdict=${3:-not built yet}
  else
    for c in $cases; do
      if grep -q "^VMTEST FAIL $c:" "$run_dir/results.txt"; then
        verdict=FAILED
      elif grep -q "^VMTEST PASS $c\$" "$run_dir/results.txt"; then
        ran=$((ran + 1))
      elif [ "$verdict" = yes ]; then
        verdict="not run"
      fi
    done
    [ "$verdict" = yes ] && [ "$ran" = 0 ] && verdict="not run"
  fi
  printf '  %-58s %-14s %s\n' "$what" "$verdict" "${cases:--}"
}
echo "what the VM backend supports (this run):"
printf '  %-58s %-14s %s\n' feature verdict cases
support "boot on /dev/kvm, host root shared read-only" "kvm doctor run_echo conformance_host_root"
support "--rootfs DIR" "rootfs"
support "exit codes, stdin, nothing left running" "exit_code stdin_cat leftovers"
support "detached: create, exec, ls, stop" "create exec stop"
support "PTY exec" "pty"
support "logs" "logs"
support "files through the relay" "fs_relay"
support "the whole conformance suite" "conformance conformance_host_root"
support "a crash recorded as crashed" "crashed"
support "boot failures reported with their cause" "boot_fail_rootfs boot_fail_agentd"
support "OCI images (--image), layers stacked on the host" "image"
support "guest network: none, --allow, public, DNS, -p, root cannot lift it" "net_none net_allow net_public net_dns net_publish net_root"
support "named volumes: the volume CLI, -v NAME:/path, :ro, --quota" "volume volume_quota volume_rm"
support "root patches (--patch)" "patch"
support "moat stats --json (the VMM process's figures)" "stats"
support "moat cp, both ways" "cp"
support "moat logs --json, --after, --since" "logs_json"
support "moat port-forward (the relay's TCP tunnel, no guest network)" "port_forward"
support "moat start of a stopped sandbox, moat drain" "start drain"
support "moat stop with a stop signal, moat create --attach" "stop_signal attach"
support "seccomp profile and masked /proc inside the guest" "vm_seccomp"
support "without root (/dev/kvm access alone; a root the user owns)" "rootless_vm"
echo "timing: $((t_boot - t_start)) s to build and assemble, $((t_end - t_boot)) s in the test host"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
