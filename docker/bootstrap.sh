#!/usr/bin/env bash
# Docker on a fresh Debian machine with no Docker Hub: install, start dockerd, build a base image with debootstrap.
#
#   docker/bootstrap.sh install   # apt-get install docker.io docker-compose debootstrap (when missing)
#   docker/bootstrap.sh start     # start dockerd in the background (unless one answers); its PID goes to $STATE
#   docker/bootstrap.sh base      # build $BASE_IMAGE (Debian bookworm minbase + python3, python3-venv, the host's
#                                 # CA bundle) unless `docker image inspect` finds it
#   docker/bootstrap.sh stop      # stop the dockerd that `start` started, by its PID (never one it did not start)
#   docker/bootstrap.sh all       # install, start, base
#
# The debootstrap mirror is the one in this host's apt sources (docker/apt_mirror.py); nothing is hard-coded.
# The base image stands in for python:3.11-slim: `python3` and `python` are Python 3.11, `python3 -m venv` works,
# and pip trusts the host's CA bundle (PIP_CERT), so `docker build --build-arg BASE_IMAGE=$BASE_IMAGE` works offline
# from Docker Hub. Environment: STATE (default /var/tmp/edgesplit-docker), BASE_IMAGE (default
# edgesplit-base:bookworm), DOCKER (default /usr/bin/docker, Debian's client, matching Debian's dockerd).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${STATE:-/var/tmp/edgesplit-docker}"
BASE_IMAGE="${BASE_IMAGE:-edgesplit-base:bookworm}"
DOCKER="${DOCKER:-/usr/bin/docker}"
SUITE=bookworm   # its python3 is 3.11, as python:3.11-slim's
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
PIDFILE="$STATE/dockerd.pid"

log() { echo "bootstrap: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install() {
  if command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v debootstrap >/dev/null \
     && [ -x "$DOCKER" ]; then
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  local pkgs=(docker.io docker-compose debootstrap)
  log "apt-get install ${pkgs[*]}"
  as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq "${pkgs[@]}" >/dev/null; }
}

start() {
  mkdir -p "$STATE"
  if "$DOCKER" info >/dev/null 2>&1; then
    log "a docker daemon already answers; using it (stop will leave it alone)"
    return 0
  fi
  log "starting dockerd (log: $STATE/dockerd.log)"
  # setsid: dockerd outlives this shell; its own PID (not a group) is what `stop` signals.
  setsid dockerd --pidfile "$STATE/dockerd.own.pid" >"$STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    if "$DOCKER" info >/dev/null 2>&1; then
      log "dockerd is up (PID $(cat "$PIDFILE"))"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      log "dockerd exited; the end of its log:"; tail -n 20 "$STATE/dockerd.log" >&2; rm -f "$PIDFILE"; return 1
    fi
    sleep 0.5
  done
  log "dockerd did not answer within 60 s; the end of its log:"; tail -n 20 "$STATE/dockerd.log" >&2
  return 1
}

stop() {
  if [ ! -f "$PIDFILE" ]; then
    log "no dockerd started by bootstrap.sh ($PIDFILE missing); nothing to stop"
    return 0
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (PID $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "dockerd (PID $pid) ignored SIGTERM for 30 s; SIGKILL"; kill -KILL "$pid"; fi
  fi
  rm -f "$PIDFILE"
}

base() {
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE exists; not rebuilding (docker rmi $BASE_IMAGE to force)"
    return 0
  fi
  local mirror rootfs
  mirror="$(python3 "$HERE/apt_mirror.py")"
  rootfs="$STATE/rootfs"
  as_root rm -rf "$rootfs"
  log "debootstrap --variant=minbase $SUITE from $mirror"
  as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$STATE/debootstrap.log" >&2; return 1; }
  # The host's CA bundle, so that pip (PIP_CERT) and apt inside builds trust what the host trusts.
  as_root cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  as_root cp "$CA_BUNDLE" "$rootfs/usr/local/share/ca-certificates/host-ca-bundle.crt"
  as_root ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"   # python:3.11-slim has `python` too
  as_root rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  log "docker import -> $BASE_IMAGE"
  as_root tar -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PIP_CERT=$CA_BUNDLE" \
    --change "ENV SSL_CERT_FILE=$CA_BUNDLE" \
    --change 'CMD ["python3"]' \
    - "$BASE_IMAGE" >/dev/null
  as_root rm -rf "$rootfs"
  "$DOCKER" run --rm "$BASE_IMAGE" python -c 'import sys, venv, ssl; print("base image python", sys.version.split()[0])'
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  base) base ;;
  all) install; start; base ;;
  *) echo "usage: $0 install|start|base|stop|all" >&2; exit 2 ;;
esac
