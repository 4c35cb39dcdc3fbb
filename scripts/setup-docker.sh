#!/usr/bin/env bash
# Makes a Docker daemon reachable on this machine (Debian, root, no systemd needed).
# Idempotent and fast when already done: installs docker.io and busybox-static with
# apt-get only when missing, starts dockerd only when `docker info` fails, and waits
# up to 60 s for it, failing with the daemon's last log lines otherwise.
set -euo pipefail

log=/var/log/dockerd.log
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
  || missing+=(busybox-static)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-docker: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" = "$DOCKER_HOST" ]; then
  echo "setup-docker: DOCKER_HOST=$DOCKER_HOST is not a local socket and does not answer;" \
       "not starting a local dockerd" >&2
  exit 1
fi

# a dockerd that died leaves its pid file, which stops the next one from starting
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  rm -f "$pidfile"
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "setup-docker: starting dockerd (log: $log)" >&2
  setsid dockerd >"$log" 2>&1 </dev/null &
fi

for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "setup-docker: the Docker daemon did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2 || true
exit 1
