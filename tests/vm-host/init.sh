#!/bin/busybox sh
# /init of the nested test host (tests/vm-host/run.sh builds the initramfs around it): mounts the
# kernel filesystems, loads kvm-amd so /dev/kvm is real, runs /suite.sh, powers off.
# Results go to the second serial port (/dev/ttyS1) as `VMTEST ...` lines, so kernel messages on
# the console (ttyS0) can never corrupt them.
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
