#!/usr/bin/env bash
# The Docker engine for the `containers` test tier: installs it when missing and starts it
# when `docker info` fails. Safe to run again and again; it never stops an engine.
#
#   tests/containers/engine.sh        # exit 0: `docker info` answers; else one line on stderr
#
# Installs Debian's docker.io (dockerd 20.10), docker-compose (v1 1.29.2: v2's plugin cannot
# be downloaded here) and debootstrap (the python stand-in) with apt-get, as root.
# The engine runs with --iptables=false --ip-forward=false --bridge=none: containers on a
# compose project's own network reach one another, nothing reaches outside. Its log is
# $WAIT_TIMES_DOCKERD_LOG (default /var/log/wait-times-dockerd.log).
set -euo pipefail

log=${WAIT_TIMES_DOCKERD_LOG:-/var/log/wait-times-dockerd.log}

fail() {
  echo "engine.sh: $*" >&2
  exit 1
}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "needs ${missing[*]} (apt-get as root) and this is not root"
  export DEBIAN_FRONTEND=noninteractive
  {
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"$log.apt" 2>&1 || fail "apt-get install ${missing[*]} failed (see $log.apt)"
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
[ "$(id -u)" = 0 ] || fail "no Docker engine answers and only root can start one"
pid=""
if pgrep -x dockerd >/dev/null; then
  : # an engine runs or is starting already: wait for it below
else
  # Detached (setsid, no terminal, own log) so it outlives the test run that started it.
  setsid dockerd --iptables=false --ip-forward=false --bridge=none \
    </dev/null >>"$log" 2>&1 &
  pid=$!
fi
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    fail "dockerd exited at start: $(tail -n 1 "$log" | cut -c1-300) (log: $log)"
  fi
  sleep 0.5
done
answer=$(docker info 2>&1 >/dev/null | grep -m 1 . | cut -c1-300 || true)
fail "no Docker engine answers after 30 s: ${answer:-docker info failed} (dockerd log: $log)"
