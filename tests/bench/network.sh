#!/usr/bin/env bash
# TCP through moat's network paths beside the host's own loopback, in one run
# (docs/BENCHMARKS.md, "Network"). Reports, never judges. Needs root, slirp4netns, nft, python3.
#
#   cargo build --release -p moat-runtime -p moat-agentd && bash tests/bench/network.sh
#
# One python3 program (/usr/bin/python3, the same file on the host and in the guest, whose
# default root is the host's) is the server and the client on every path:
#   loopback      host client -> host server on 127.0.0.1                       (the floor)
#   guest->host   guest client -> host.moat.internal:HP (--allow), i.e. the same host server
#                 (guest veth -> router netns nftables -> slirp4netns -> host loopback)
#   -p publish    host client -> 127.0.0.1:PP, published with -p PP:GP -> guest server on GP
#                 (slirp4netns host forward -> router netns DNAT -> guest)
#   port-forward  host client -> `moat port-forward NAME 127.0.0.1:FP:GP` -> guest server on GP
#                 (relay tunnel: core.tcp.connect over the agent socket, no guest network)
# Each path, per round: SIZE_MIB sent client -> server ("send", answered with the byte count),
# SIZE_MIB sent server -> client ("recv"), and CONNS connections each timed from connect() to the
# first byte of a 1-byte echo ("setup": a tunnel's own listener accepts before the far end is
# reached, so connect() alone would not see the path). Rounds interleave the paths so machine
# noise hits all of them; rates are the median over rounds, setup percentiles pool every round.
#
# Environment: SIZE_MIB (default 256), CONNS (default 200), ROUNDS (default 3),
# MOAT (default target/release/moat). Traffic stays on this host's loopback and in the
# sandbox's own network namespaces.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
size_mib=${SIZE_MIB:-256}
conns=${CONNS:-200}
rounds=${ROUNDS:-3}
moat=${MOAT:-$root/target/release/moat}
py=/usr/bin/python3
for tool in slirp4netns nft "$py" "$moat"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "network.sh: $tool is missing (apt-get install slirp4netns nftables python3; build moat --release)"; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "network.sh: needs root (moat's namespace backend and its network)"; exit 2; }

work=$(mktemp -d /var/tmp/moat-network.XXXXXX)
export MOAT_HOME=$work/home
name=net-$$
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$moat" rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The server and client, one program. Wire: 1 byte op + 8-byte big-endian length, then
#   E: the server answers one byte          S: the client sends LEN bytes, the server answers
#   R: the server sends LEN bytes              the 8-byte count it received
read -r -d '' prog <<'PY' || true
import json, socket, statistics, struct, sys, threading, time
CHUNK = 256 * 1024

def exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        got = s.recv(n - len(buf))
        if not got:
            raise EOFError("closed after %d of %d bytes" % (len(buf), n))
        buf += got
    return bytes(buf)

def drain(s, n):
    view, got = memoryview(bytearray(CHUNK)), 0
    while got < n:
        r = s.recv_into(view, min(CHUNK, n - got))
        if r == 0:
            break
        got += r
    return got

def pour(s, n):
    data = memoryview(bytes(CHUNK))
    while n:
        k = min(CHUNK, n)
        s.sendall(data[:k])
        n -= k

def handle(c):
    with c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = exact(c, 9)
        op, n = head[:1], struct.unpack(">Q", head[1:])[0]
        if op == b"E":
            c.sendall(b"e")
        elif op == b"S":
            c.sendall(struct.pack(">Q", drain(c, n)))
        elif op == b"R":
            pour(c, n)
            c.recv(1)

def serve(addr, port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1024)
    print("listening", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()

def connect(ip, port, op, n):
    s = socket.create_connection((ip, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(op + struct.pack(">Q", n))
    return s

def client(host, port, size, conns):
    ip = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    out = {}
    start = time.monotonic()
    with connect(ip, port, b"S", size) as s:
        pour(s, size)
        got = struct.unpack(">Q", exact(s, 8))[0]
    out["send_mib_s"] = size / 1048576 / (time.monotonic() - start)
    if got != size:
        sys.exit("server received %d of %d bytes" % (got, size))
    start = time.monotonic()
    with connect(ip, port, b"R", size) as s:
        got = drain(s, size)
    out["recv_mib_s"] = size / 1048576 / (time.monotonic() - start)
    if got != size:
        sys.exit("received %d of %d bytes" % (got, size))
    setup = []
    for _ in range(conns):
        start = time.monotonic()
        with connect(ip, port, b"E", 0) as s:
            exact(s, 1)
            setup.append((time.monotonic() - start) * 1000)
    out["setup_ms"] = setup
    print(json.dumps(out), flush=True)

def wait(host, port, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with connect(host, port, b"E", 0) as s:
                exact(s, 1)
            return
        except (OSError, EOFError):
            if time.monotonic() > deadline:
                sys.exit("no server answered on %s:%d" % (host, port))
            time.sleep(0.05)

def summary(paths, lines):
    results = {p: {"send": [], "recv": [], "setup": []} for p in paths}
    for line in lines:
        path, data = line.split(" ", 1)
        data = json.loads(data)
        results[path]["send"].append(data["send_mib_s"])
        results[path]["recv"].append(data["recv_mib_s"])
        results[path]["setup"].extend(data["setup_ms"])
    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]
    floor = results[paths[0]]
    f_send, f_recv = statistics.median(floor["send"]), statistics.median(floor["recv"])
    f_setup = pct(floor["setup"], 50)
    print("%-13s %10s %10s %8s %8s %10s %10s %9s" % ("path", "send MiB/s", "recv MiB/s",
          "send/fl", "recv/fl", "setup p50", "setup p99", "p50/fl"))
    for p in paths:
        r = results[p]
        send, recv = statistics.median(r["send"]), statistics.median(r["recv"])
        p50, p99 = pct(r["setup"], 50), pct(r["setup"], 99)
        print("%-13s %10.1f %10.1f %8.3f %8.3f %8.3fms %8.3fms %9.2f" % (p, send, recv,
              send / f_send, recv / f_recv, p50, p99, p50 / f_setup))
        print("%-13s   send %s  recv %s  (per round)" % ("", " ".join("%.0f" % x for x in r["send"]),
              " ".join("%.0f" % x for x in r["recv"])))

cmd = sys.argv[1]
if cmd == "serve":
    serve(sys.argv[2], int(sys.argv[3]))
elif cmd == "client":
    client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
elif cmd == "wait":
    wait(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
elif cmd == "free-port":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
elif cmd == "summary":
    summary(sys.argv[2:], sys.stdin.read().splitlines())
PY

free_port() { "$py" -c "$prog" free-port; }
host_port=$(free_port); pub_port=$(free_port); fwd_port=$(free_port); guest_port=8765
size=$((size_mib * 1024 * 1024))

echo "network.sh: $(date -u +%FT%TZ)  nproc $(nproc)  kernel $(uname -r)  load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "network.sh: $size_mib MiB each way, $conns connections, $rounds rounds"

"$py" -c "$prog" serve 127.0.0.1 "$host_port" >/dev/null & pids+=($!)
"$moat" create "$name" --isolation namespace \
  --allow "host.moat.internal:$host_port" -p "127.0.0.1:$pub_port:$guest_port" >/dev/null
"$moat" exec "$name" -- "$py" -c "$prog" serve 0.0.0.0 "$guest_port" >/dev/null 2>&1 & pids+=($!)
"$moat" port-forward "$name" "127.0.0.1:$fwd_port:$guest_port" >/dev/null 2>&1 & pids+=($!)
"$py" -c "$prog" wait 127.0.0.1 "$host_port" 10
"$py" -c "$prog" wait 127.0.0.1 "$pub_port" 20
"$py" -c "$prog" wait 127.0.0.1 "$fwd_port" 20

paths=(loopback guest-\>host -p-publish port-forward)
results=$work/results
for round in $(seq "$rounds"); do
  echo "network.sh: round $round of $rounds, load $(cut -d' ' -f1 /proc/loadavg)" >&2
  echo "loopback $("$py" -c "$prog" client 127.0.0.1 "$host_port" "$size" "$conns")" >>"$results"
  echo "guest->host $("$moat" exec "$name" -- "$py" -c "$prog" client host.moat.internal "$host_port" "$size" "$conns")" >>"$results"
  echo "-p-publish $("$py" -c "$prog" client 127.0.0.1 "$pub_port" "$size" "$conns")" >>"$results"
  echo "port-forward $("$py" -c "$prog" client 127.0.0.1 "$fwd_port" "$size" "$conns")" >>"$results"
done
"$py" -c "$prog" summary "${paths[@]}" <"$results"
echo "network.sh: done $(date -u +%FT%TZ)  load $(cut -d' ' -f1-3 /proc/loadavg)"
