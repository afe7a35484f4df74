#!/usr/bin/env bash
# STAND-IN for python:3.11.14-slim-bookworm (Docker Hub cannot be reached here), used only
# by the `containers` test tier (tests/containers/images.py calls this script).
#
#   standins/python/build.sh TAG LABEL      # e.g. python:3.11.14-slim-bookworm <sha256>
#
# A Debian bookworm root filesystem from debootstrap (--variant=minbase, with python3,
# python3-venv, ca-certificates and passwd: the Dockerfile's groupadd/useradd), imported
# with `docker import`. Not the official image: Debian's Python 3.11 in /usr/bin (the tag's
# 3.11.14 is a name only), `python` linked to python3, and this machine's CA bundle in
# /etc/ssl/certs/ca-certificates.crt with SSL_CERT_FILE pointing to it, so uv and pip
# inside a build trust the certificates this machine trusts. The tarball is cached in
# $WAIT_TIMES_STANDIN_CACHE (default /var/cache/wait-times-standins, outside git): only
# the first run pays for debootstrap (about a minute).
set -euo pipefail

tag=$1
label=$2
cache=${WAIT_TIMES_STANDIN_CACHE:-/var/cache/wait-times-standins}
mirror=${WAIT_TIMES_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball=$cache/python-bookworm-minbase-$label.tar  # keyed by this script's digest

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  rm -f "$cache"/python-bookworm-minbase-*.tar  # made by an older version of this script
  root=$cache/rootfs.tmp
  rm -rf "$root"
  echo "python stand-in: debootstrap bookworm into $root (log: $cache/debootstrap.log)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1
  ln -sf python3 "$root/usr/bin/python"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"
fi
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change "LABEL wait-times.standin=$label" \
  --change 'LABEL org.opencontainers.image.description="STAND-IN for python:3.11.14-slim-bookworm: Debian bookworm minbase + python3 (tests/containers/standins/python)"' \
  --change 'CMD ["python3"]' \
  "$tarball" "$tag" >/dev/null
