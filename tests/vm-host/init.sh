#!/bin/busybox sh
# /init of the nested test host (tests/vm-host/run.sh builds the initramfs around it): mounts the
# kernel filesystems, loads kvm-amd so /dev/kvm is real, runs /suite.sh, powers off.
# Results go to the second serial port (/dev/ttyS1) as `VMTEST ...` lines, so kernel messages on
# the console (ttyS0) can never corrupt them.
# First, move from the initramfs (rootfs, which cannot be pivot_root'ed away) onto a tmpfs:
# slirp4netns's --enable-sandbox (the guest network) pivots into an empty root, and fails on
# rootfs ("cannot pivot_root to /tmp").
if [ "$$" = 1 ] && [ -z "${VMHOST_ON_TMPFS:-}" ]; then
  /bin/busybox mkdir -p /newroot
  /bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
  for d in /*; do
    [ "$d" = /newroot ] || /bin/busybox cp -a "$d" /newroot/
  done
  export VMHOST_ON_TMPFS=1
  exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox --install -s /bin
export PATH=/opt/moat:/usr/bin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
hostname vmhost
ip link set lo up 2>/dev/null

out=/dev/ttyS1
report() { echo "VMTEST $*" >"$out"; }

echo "vm-host: up at $(cut -d' ' -f1 /proc/uptime) s ($(cat /etc/vmtest-versions))"
report "INFO test host up at $(cut -d' ' -f1 /proc/uptime) s, $(cat /etc/vmtest-versions)"
for m in irqbypass kvm kvm-amd overlay loop; do
  args=
  [ "$m" = kvm-amd ] && args=$(cat /etc/vmtest-kvm-amd-args 2>/dev/null)
  # shellcheck disable=SC2086 # the module parameters are separate words
  if ! insmod "/mods/$m.ko" $args; then
    echo "vm-host: insmod $m.ko failed"
  fi
done

# The guest network's modules (run.sh lists them in load order).
for m in $(cat /mods/net.list 2>/dev/null); do
  insmod "/mods/net/$m.ko" || echo "vm-host: insmod $m.ko failed"
done

# A heartbeat on the results port: run.sh tells a test host that stopped responding (its kernel
# hung under emulation, or its serial ports stalled) from a slow case by these lines.
(
  while :; do
    sleep 10
    report "ALIVE $(cut -d' ' -f1 /proc/uptime)"
  done
) &

export MOAT_HOME=/tmp/moat
export MOAT_LIBKRUNFW=/opt/libkrunfw.so.5
export MOAT_AGENTD_STATIC=/opt/moat/moat-agentd-static
export VMTEST_OUT=$out
export HOME=/root

sh /suite.sh $(cat /etc/vmtest-cases)
echo "vm-host: suite ended with status $?"
report "DONE"
sync
poweroff -f
