#!/usr/bin/env bash
# Builds the agent's image with buildah (no Docker daemon needed) and checks what a node will
# run: the image's user and health check, then the image itself, started from its own
# entrypoint as that user against a fixture tree (a two-socket RAPL sysfs): it must serve
# /metrics with the fixture's counters, and its HEALTHCHECK command must pass.
#
#   deploy/container/check-image.sh            # from the repository root, as root
#
# Settings (environment):
#   BASE_FROM_DEBIAN=1  no registry reachable: build a stand-in for the Dockerfile's
#                       python:3.11-slim-bookworm from Debian's packages with debootstrap
#                       (Debian's Python 3.11 and pip), tagged with the same name
#   CA_BUNDLE=FILE      a CA bundle the build's pip needs (a TLS-intercepting proxy)
#   IMAGE=NAME          the tag to build (default localhost/wattwise:check)
# Needs buildah; BASE_FROM_DEBIAN needs debootstrap. Builds use the vfs storage driver and
# chroot isolation, so they also run inside a container.
set -euo pipefail
cd "$(dirname "$0")/../.."
export STORAGE_DRIVER=vfs
IMAGE=${IMAGE:-localhost/wattwise:check}
BASE=docker.io/library/python:3.11-slim-bookworm
work=$(mktemp -d)
trap 'buildah rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }

if [ "${BASE_FROM_DEBIAN:-0}" = 1 ] && ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  step "stand-in for $BASE from Debian bookworm (debootstrap)"
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    bookworm "$work/root" http://deb.debian.org/debian >"$work/debootstrap.log"
  rm -f "$work"/root/usr/lib/python3.*/EXTERNALLY-MANAGED  # as the python image: pip installs
  chroot "$work/root" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/*'
  base=$(buildah from scratch)
  cp -a "$work/root/." "$(buildah mount "$base")/"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$base"
  buildah commit -q --rm "$base" "$BASE" >/dev/null
fi

step "build $IMAGE"
volumes=()
if [ -n "${CA_BUNDLE:-}" ]; then
  volumes=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi
# Docker format: OCI image configs have no HEALTHCHECK.
buildah bud --pull-never --format docker --isolation chroot --network host "${volumes[@]}" \
  -f deploy/container/Dockerfile -t "$IMAGE" . >"$work/build.log" ||
  { tail -20 "$work/build.log"; exit 1; }
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"

step "the image's configuration"
user=$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")
health=$(buildah inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$IMAGE")
entrypoint=$(buildah inspect --type image --format '{{.Docker.Config.Entrypoint}}' "$IMAGE")
echo "user: $user; entrypoint: $entrypoint; healthcheck: $health"
[ "$user" = 10001 ] || { echo "FAIL: the image's user is '$user', not 10001"; exit 1; }
case "$health" in *wattwise*health*) ;; *) echo "FAIL: no wattwise health check"; exit 1 ;; esac

step "run the image as its user against a fixture tree"
python3 - "$work/sys" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.support.fixtures.trees import two_socket_server
two_socket_server(Path(sys.argv[1]))
EOF
chmod -R a+rX "$work/sys"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ctr=$(buildah from --pull-never "$IMAGE")
# The entrypoint and command the image declares, as its user; only the listen address and
# the fixture's sysfs differ from what a node runs.
buildah run --isolation chroot --network host --user 10001:10001 \
  --volume "$work/sys:/host/sys:ro" \
  --env WATTWISE_SYSFS_ROOT=/host/sys --env WATTWISE_LISTEN="127.0.0.1:$port" \
  --env WATTWISE_JOBS__ENABLED=false \
  "$ctr" -- wattwise run --config /etc/wattwise/wattwise.yaml >"$work/agent.log" 2>&1 &
agent=$!
rapl='^wattwise_node_energy_joules_total\{.*domain="package".*source="rapl"'
for _ in $(seq 60); do  # until the first tick's counters are served
  curl -fs "http://127.0.0.1:$port/metrics" >"$work/metrics" 2>/dev/null &&
    grep -qE "$rapl" "$work/metrics" && break
  sleep 0.5
done
grep -E "$rapl" "$work/metrics" ||
  { echo "FAIL: no RAPL package counters"; cat "$work/agent.log"; kill "$agent"; exit 1; }
uid=$(ps -o uid= -C wattwise | sort -u | tr -d ' ' | head -1)
echo "the agent's process runs as uid $uid"
[ "$uid" = 10001 ] || { echo "FAIL: the agent runs as uid '$uid'"; kill "$agent"; exit 1; }
sleep 2
# The HEALTHCHECK's own command, in the image, as its user.
read -r -a probe <<<"$(echo "$health" | tr -d '[]' | sed 's/^CMD //')"
buildah run --isolation chroot --network host --user 10001:10001 "$ctr" -- \
  "${probe[@]}" --url "http://127.0.0.1:$port/metrics"
pkill -INT -f "wattwise run --config /etc/wattwise/wattwise.yaml" || true
wait "$agent" || true
step "PASS: $IMAGE serves /metrics as uid 10001 and its health check passes"
