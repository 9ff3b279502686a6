#!/usr/bin/env bash
# `make docker-test`: build the CPU image with podman (no Docker engine here), start it, check
# /ready and one embedding through the published port, stop it. Needs root for apt and podman.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=localhost/rrs:cpu-test
BASE=${BASE_IMAGE:-localhost/debian-min:bookworm}
PORT=${DOCKER_TEST_PORT:-18000}
WORK=${DOCKER_TEST_WORK:-/tmp/rrs-docker-test}
mkdir -p "$WORK"
start=$(date +%s)

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null
fi
cat > "$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
PODMAN=(podman --runtime runc)

# A local base image when no registry is reachable: a minimal Debian made with debootstrap.
if [[ "$BASE" == localhost/debian-min:bookworm ]] && ! "${PODMAN[@]}" image exists "$BASE"; then
  mirror=$( { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
              grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } \
            | grep -v security | head -n1 || true)
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import - "$BASE" >/dev/null
fi

# Let pip inside the build see what pip on this host sees (CA certs, config, local wheel folder).
mounts=(-v /etc/ssl/certs/ca-certificates.crt:/opt/host-ca/ca-certificates.crt:ro)
for p in /etc/pip.conf /root/.config/pip/pip.conf /opt/wheels /opt/pypi /opt/pypi-more; do
  [[ -e "$p" ]] && mounts+=(-v "$p:$p:ro")
done
envs=(--build-arg PIP_CERT=/opt/host-ca/ca-certificates.crt)
for v in PIP_FIND_LINKS PIP_DEFAULT_TIMEOUT PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
  [[ -n "${!v:-}" ]] && envs+=(--build-arg "$v=${!v}")
done
"${PODMAN[@]}" build --network host "${mounts[@]}" "${envs[@]}" -f docker/Dockerfile --build-arg "BASE_IMAGE=$BASE" \
  -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; exit 1; }
built=$(date +%s)

name=rrs-docker-test-$$
"${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true
"${PODMAN[@]}" run -d --name "$name" --network host -e RRS_PORT="$PORT" "$IMAGE" >/dev/null
trap '"${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 180); do
  if curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; then break; fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/ready"; echo
out=$(curl -fsS "http://127.0.0.1:$PORT/v1/embeddings" -H 'content-type: application/json' \
      -d '{"input": "container check"}')
python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert len(d['data'][0]['embedding'])==384; print('embedding ok')" "$out"
user=$("${PODMAN[@]}" exec "$name" id -un)
[[ "$user" == rrs ]] || { echo "container runs as $user, expected rrs"; exit 1; }
echo "docker-test: ok (build $((built - start)) s, total $(( $(date +%s) - start )) s, user $user)"
