#!/usr/bin/env bash
# moat beside its peers, in one run (docs/BENCHMARKS.md, "Peers"). Reports, never judges.
# Needs root, Debian's bubblewrap and runsc, python3. Run from anywhere:
#
#   cargo build --release -p moat-runtime -p moat-agentd && bash tests/bench/peers.sh
#
# Each command is started RUNS times from one python3 process (fork + exec + wait, timed with a
# monotonic clock), in rounds that interleave the tools so that machine noise hits all of them:
#   floor        /bin/true itself: what starting any process costs here
#   bwrap        bubblewrap: new user, pid, mount, net, ipc, uts namespaces over a read-only /
#   moat run     an ephemeral namespace sandbox (moat's default hardening), `true` in it, removed
#   runsc do     gVisor running `true` in a throw-away sandbox (--network=none)
#   moat exec    `true` in a running moat sandbox (a new relay client each time, as the CLI does)
#   runsc exec   `true` in a running gVisor container
#
# Environment: RUNS (default 30), MOAT (default target/release/moat).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
runs=${RUNS:-30}
moat=${MOAT:-$root/target/release/moat}
for tool in bwrap runsc python3 "$moat"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "peers.sh: $tool is missing (apt-get install bubblewrap runsc python3; build moat --release)"; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "peers.sh: needs root (runsc and moat's namespace backend)"; exit 2; }

work=$(mktemp -d /var/tmp/moat-peers.XXXXXX)
export MOAT_HOME=$work/home
name=peers-$$
gvisor=moat-peers-$$
cleanup() {
  "$moat" rm -f "$name" >/dev/null 2>&1 || true
  runsc kill "$gvisor" KILL >/dev/null 2>&1 || true
  runsc delete -force "$gvisor" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# A gVisor container over a static busybox root, and a moat sandbox, both left running.
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/"
ln -s busybox "$work/bundle/rootfs/bin/true"
ln -s busybox "$work/bundle/rootfs/bin/sleep"
(cd "$work/bundle" && runsc spec -- /bin/sleep 100000)
runsc --network=none run -detach -bundle "$work/bundle" "$gvisor" >/dev/null
"$moat" create "$name" --isolation namespace >/dev/null

python3 - "$runs" "$moat" "$name" "$gvisor" <<'PY'
import subprocess, sys, time

runs, moat, name, gvisor = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
tools = [
    ("floor", ["/bin/true"]),
    ("bwrap", ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--unshare-all", "--die-with-parent", "true"]),
    ("moat run", [moat, "run", "--isolation", "namespace", "--", "true"]),
    ("runsc do", ["runsc", "--network=none", "do", "true"]),
    ("moat exec", [moat, "exec", name, "--", "true"]),
    ("runsc exec", ["runsc", "exec", gvisor, "/bin/true"]),
]
samples = {label: [] for label, _ in tools}
for label, argv in tools:  # one untimed warm-up each
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(runs):
    for label, argv in tools:
        start = time.monotonic()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.monotonic() - start
        if done.returncode != 0:
            sys.exit(f"peers.sh: {label} exited {done.returncode}: {' '.join(argv)}")
        samples[label].append(elapsed * 1000)

def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

bwrap = pct(samples["bwrap"], 50)
print(f"{runs} runs each, interleaved; milliseconds")
print(f"{'':12} {'p50':>8} {'p90':>8} {'p99':>8} {'p50/bwrap':>10}")
for label, _ in tools:
    v = samples[label]
    print(f"{label:12} {pct(v, 50):8.2f} {pct(v, 90):8.2f} {pct(v, 99):8.2f} {pct(v, 50) / bwrap:10.2f}")
PY
