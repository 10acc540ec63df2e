#!/usr/bin/env bash
# Prepares, on the outer host, the image store the test host's `image` case runs from:
# a two-layer OCI image built here from the test rootfs, pushed to Debian's `docker-registry` on a
# free 127.0.0.1 port (stopped on exit), then `moat pull`ed into a fresh moat home. run.sh copies
# that home's images/ into the initramfs, so the test host (which has no registry) runs the image
# from a warm store, as `moat run --image` does for any cached image.
#
# The image: layer 1 (gzip) is the rootfs plus /etc/removeme; layer 2 (uncompressed) adds
# /etc/greeting and /work and whites out /etc/removeme. The config sets Env, WorkingDir and Cmd,
# so the case checks the overlay (a file from each layer, a whiteout) and the image's defaults.
#
# Usage: image-store.sh MOAT ROOTFS HOME; prints the image reference on stdout. Only loopback.
set -euo pipefail
moat=$1
rootfs=$2
home=$3
registry_bin=/usr/bin/docker-registry
[ -x "$registry_bin" ] || { echo "$registry_bin is missing (apt-get install docker-registry)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "moat pull stores whiteouts as device nodes: run.sh must run as root" >&2; exit 1; }

work=$(mktemp -d)
registry_pid=
cleanup() {
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: one nothing answers on.
port=
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 20000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "no free 127.0.0.1 port found" >&2; exit 1; }
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
EOF
"$registry_bin" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$registry_pid" 2>/dev/null || { echo "docker-registry exited: $(tail -n 3 "$work/registry.log")" >&2; exit 1; }
  sleep 0.1
done
base=http://127.0.0.1:$port/v2/vmtest

sha() { sha256sum "$1" | cut -d' ' -f1; }
# push_blob FILE: uploads FILE (POST for an upload URL, then PUT with its digest).
push_blob() {
  local digest location
  digest=sha256:$(sha "$1")
  location=$(curl -fsS -o /dev/null -D - -X POST "$base/blobs/uploads/" |
    tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $location in /*) location=http://127.0.0.1:$port$location ;; esac
  case $location in *\?*) location="$location&digest=$digest" ;; *) location="$location?digest=$digest" ;; esac
  curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary "@$1" "$location"
}
# tar_of DIR OUT: DIR's contents as a tar owned by root.
tar_of() {
  (cd "$1" && tar --numeric-owner --owner=0 --group=0 --sort=name -cf "$2" $(ls -A))
}

mkdir -p "$work/l1" "$work/l2/etc" "$work/l2/work"
cp -a "$rootfs/." "$work/l1/"
echo old >"$work/l1/etc/removeme"
echo "hello from layer 2" >"$work/l2/etc/greeting"
: >"$work/l2/etc/.wh.removeme"
tar_of "$work/l1" "$work/l1.tar"
tar_of "$work/l2" "$work/l2.tar"
gzip -1 -n -c "$work/l1.tar" >"$work/l1.tar.gz"
cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","GREETING=hi"],"WorkingDir":"/work","Cmd":["sh","-c","echo \$GREETING from \$(pwd); cat /etc/greeting; test -e /etc/removeme || echo removed; cat /etc/moat-test-marker"]},"rootfs":{"type":"layers","diff_ids":["sha256:$(sha "$work/l1.tar")","sha256:$(sha "$work/l2.tar")"]}}
EOF
cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$(sha "$work/config.json")","size":$(stat -c %s "$work/config.json")},
 "layers":[
  {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$(sha "$work/l1.tar.gz")","size":$(stat -c %s "$work/l1.tar.gz")},
  {"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$(sha "$work/l2.tar")","size":$(stat -c %s "$work/l2.tar")}]}
EOF
for f in config.json l1.tar.gz l2.tar; do push_blob "$work/$f"; done
curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary "@$work/manifest.json" "$base/manifests/1"

reference=127.0.0.1:$port/vmtest:1
rm -rf "$home"
mkdir -p "$home"
MOAT_HOME=$home "$moat" pull "$reference" >&2
echo "$reference"
