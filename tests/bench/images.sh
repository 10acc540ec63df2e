#!/usr/bin/env bash
# Image benchmark (docs/BENCHMARKS.md, "Images"). Reports, never judges. Needs root and Debian's
# docker-registry, skopeo, umoci and busybox-static; talks only to a registry it starts on
# 127.0.0.1. Run from anywhere:
#
#   cargo build --release -p moat-runtime -p moat-agentd && bash tests/bench/images.sh
#
#  1. builds a ~100 MB image (busybox + files copied from the host's /usr/lib, 4 gzip layers)
#     with umoci and pushes it with skopeo;
#  2. pull + unpack, RUNS times each, from a cold store: `moat pull` vs `skopeo copy` (to an OCI
#     layout) + `umoci unpack` (to a bundle), in the same run;
#  3. create-to-ready, RUNS times each: `moat create --image` (cached) vs `moat create --rootfs host`.
#
# Environment: RUNS (default 3), MOAT (default target/release/moat).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
runs=${RUNS:-3}
moat=${MOAT:-$root/target/release/moat}
for tool in /usr/bin/docker-registry skopeo umoci /bin/busybox "$moat"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "images.sh: $tool is missing (apt-get install docker-registry skopeo umoci busybox-static; build moat --release)"; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "images.sh: needs root"; exit 2; }

work=$(mktemp -d /var/tmp/moat-image-bench.XXXXXX)
registry_pid=
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YAML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
ref=127.0.0.1:$port/bench/big:1

echo "== building the image"
cd "$work"
umoci init --layout oci >/dev/null
umoci new --image oci:big >/dev/null
umoci unpack --image oci:big bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/etc bundle/rootfs/tmp bundle/rootfs/data
cp /bin/busybox bundle/rootfs/bin/ && ln -s busybox bundle/rootfs/bin/sh && ln -s busybox bundle/rootfs/bin/true
echo 'root:x:0:0:root:/root:/bin/sh' > bundle/rootfs/etc/passwd
umoci repack --refresh-bundle --image oci:big bundle >/dev/null
# Three more layers of ~33 MB of real (compressible) files each: shared libraries from the host.
mapfile -t libs < <(find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' -size +200k -size -8M | sort)
layer=0; bytes=0; target=$((33 * 1000 * 1000))
for lib in "${libs[@]}"; do
  [ $layer -ge 3 ] && break
  mkdir -p "bundle/rootfs/data/l$layer"
  cp "$lib" "bundle/rootfs/data/l$layer/"
  bytes=$((bytes + $(stat -c %s "$lib")))
  if [ $bytes -ge $target ]; then
    umoci repack --refresh-bundle --image oci:big bundle >/dev/null
    layer=$((layer + 1)); bytes=0
  fi
done
umoci config --image oci:big --config.cmd /bin/true >/dev/null
skopeo copy -q --dest-tls-verify=false oci:oci:big "docker://$ref"
unpacked=$(du -sb bundle/rootfs | cut -f1)
read -r layers compressed < <(skopeo inspect --raw --tls-verify=false "docker://$ref" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["layers"]), sum(l["size"] for l in d["layers"]))')
echo "image: $ref, $layers layers, $compressed B compressed (gzip), $unpacked B unpacked"
rm -rf bundle oci

seconds() { local start end; start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N); echo "$end - $start" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== pull + unpack, $runs runs each, cold store each time"
moat_pull=(); skopeo_umoci=()
for i in $(seq "$runs"); do
  rm -rf "$work/home" && mkdir -p "$work/home"
  moat_pull+=("$(MOAT_HOME=$work/home seconds "$moat" pull "$ref")")
  rm -rf "$work/oci" "$work/bundle"
  skopeo_umoci+=("$(seconds bash -c "skopeo copy -q --src-tls-verify=false docker://$ref oci:$work/oci:big && umoci unpack --image $work/oci:big $work/bundle")")
done
m=$(printf '%s\n' "${moat_pull[@]}" | median); s=$(printf '%s\n' "${skopeo_umoci[@]}" | median)
echo "moat pull:            runs ${moat_pull[*]} s; median $m s = $(echo "$compressed / $m / 1000000" | bc) MB/s compressed, $(echo "$unpacked / $m / 1000000" | bc) MB/s unpacked"
echo "skopeo copy + umoci:  runs ${skopeo_umoci[*]} s; median $s s = $(echo "$compressed / $s / 1000000" | bc) MB/s compressed, $(echo "$unpacked / $s / 1000000" | bc) MB/s unpacked"

echo "== create-to-ready (moat create returns when the agent is ready), $runs runs each"
image_ready=(); host_ready=()
for i in $(seq "$runs"); do
  image_ready+=("$(MOAT_HOME=$work/home seconds "$moat" create "img$i" --isolation namespace --image "$ref")")
  MOAT_HOME=$work/home "$moat" rm -f "img$i" >/dev/null
  host_ready+=("$(MOAT_HOME=$work/home seconds "$moat" create "host$i" --isolation namespace --rootfs host)")
  MOAT_HOME=$work/home "$moat" rm -f "host$i" >/dev/null
done
echo "create --image (cached): runs ${image_ready[*]} s; median $(printf '%s\n' "${image_ready[@]}" | median) s"
echo "create --rootfs host:    runs ${host_ready[*]} s; median $(printf '%s\n' "${host_ready[@]}" | median) s"
