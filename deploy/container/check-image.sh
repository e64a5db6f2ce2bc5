#!/usr/bin/env bash
# Builds the agent's image with buildah (no Docker daemon needed) and checks what a node will
# run: the image's user and health check, then the image itself, its own ENTRYPOINT and CMD
# run as that user against a fixture tree (a two-socket RAPL sysfs): it must serve /metrics
# with the fixture's counters, and its HEALTHCHECK command, unchanged, must pass. The agent
# listens on 127.0.0.1:9877 (the health check's default), so that port must be free.
#
#   deploy/container/check-image.sh            # from the repository root, as root
#
# Settings (environment):
#   BASE_FROM_DEBIAN=1  no registry reachable: build a stand-in for the Dockerfile's
#                       python:3.11-slim-bookworm from Debian's packages with debootstrap
#                       (Debian's Python 3.11 and pip), tagged with the same name
#   CA_BUNDLE=FILE      a CA bundle the build's pip needs (a TLS-intercepting proxy)
#   IMAGE=NAME          the tag to build (default localhost/wattwise:check)
# Needs buildah, curl and ss; BASE_FROM_DEBIAN needs debootstrap. Builds use the vfs storage
# driver and chroot isolation, so they also run inside a container.
set -euo pipefail
cd "$(dirname "$0")/../.."
export STORAGE_DRIVER=vfs
IMAGE=${IMAGE:-localhost/wattwise:check}
BASE=docker.io/library/python:3.11-slim-bookworm
PORT=9877
work=$(mktemp -d)
ctr=""
runner=""
cleanup() {  # only what this script made: the agent, its container, the work folder
  if [ -n "$runner" ]; then
    agent=$(ss -Hltnp "sport = :$PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
    if [ -n "$agent" ]; then kill -INT "$agent" 2>/dev/null || true; fi
    kill -INT "$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
  fi
  if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*"; exit 1; }

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
pull=()
if [ "${BASE_FROM_DEBIAN:-0}" = 1 ]; then pull=(--pull-never); fi  # the stand-in, no registry
volumes=()
if [ -n "${CA_BUNDLE:-}" ]; then
  volumes=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi
# Docker format: OCI image configs have no HEALTHCHECK.
buildah bud "${pull[@]}" --format docker --isolation chroot --network host "${volumes[@]}" \
  -f deploy/container/Dockerfile -t "$IMAGE" . >"$work/build.log" ||
  { tail -20 "$work/build.log"; exit 1; }
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"

step "the image's configuration"
field() { buildah inspect --type image --format "{{.Docker.Config.$1}}" "$IMAGE" | tr -d '[]'; }
user=$(field User)
read -r -a command <<<"$(field Entrypoint) $(field Cmd)"
read -r -a health <<<"$(field Healthcheck.Test | sed 's/^CMD //')"
echo "user: $user; runs: ${command[*]}; health check: ${health[*]}"
[ "$user" = 10001 ] || fail "the image's user is '$user', not 10001"
[ "${health[0]:-}" = wattwise ] && [ "${health[1]:-}" = health ] || fail "no wattwise health check"

step "run the image as its user against a fixture tree"
python3 -c 'import sys; sys.path.insert(0, "."); from pathlib import Path
from tests.support.fixtures.trees import two_socket_server; two_socket_server(Path(sys.argv[1]))' \
  "$work/sys"
chmod -R a+rX "$work/sys"
if ss -Hltn "sport = :$PORT" | grep -q .; then fail "port $PORT is taken here"; fi
ctr=$(buildah from --pull-never "$IMAGE")
# Only the sysfs (a fixture), the address (this machine only) and job discovery (off: no
# cgroups are mounted) differ from what a node runs.
buildah run --isolation chroot --network host --user 10001:10001 \
  --volume "$work/sys:/host/sys:ro" \
  --env WATTWISE_SYSFS_ROOT=/host/sys --env WATTWISE_LISTEN="127.0.0.1:$PORT" \
  --env WATTWISE_JOBS__ENABLED=false \
  "$ctr" -- "${command[@]}" >"$work/agent.log" 2>&1 &
runner=$!
rapl='^wattwise_node_energy_joules_total\{.*domain="package".*source="rapl"'
for _ in $(seq 60); do  # until the first tick's counters are served
  if curl -fs "http://127.0.0.1:$PORT/metrics" >"$work/metrics" 2>/dev/null &&
    grep -qE "$rapl" "$work/metrics"; then break; fi
  sleep 0.5
done
grep -E "$rapl" "$work/metrics" || { cat "$work/agent.log"; fail "no RAPL package counters"; }
# The process listening on the port, not any other wattwise on this machine.
agent_pid=$(ss -Hltnp "sport = :$PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
[ -n "$agent_pid" ] || fail "no process is seen listening on :$PORT"
uid=$(awk '/^Uid:/ {print $2}' "/proc/$agent_pid/status")
echo "the process listening on :$PORT (pid $agent_pid) runs as uid $uid"
[ "$uid" = 10001 ] || fail "the agent runs as uid '$uid'"
sleep 2
buildah run --isolation chroot --network host --user 10001:10001 "$ctr" -- "${health[@]}"
step "PASS: $IMAGE serves /metrics as uid 10001 and its own health check passes"
