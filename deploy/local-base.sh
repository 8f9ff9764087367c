#!/usr/bin/env bash
# Stand-ins, made from Debian's packages, for the official images that the Dockerfile and
# docker-compose.yml name, on a machine that reaches Debian's mirror but no image registry (CI):
#
#   hfproxy-standin/python:3.11-slim    debootstrap bookworm (Debian's Python 3.11.2), imported
#   hfproxy-standin/postgres:16-alpine  that base + Debian's PostgreSQL 15 (deploy/standins/postgres)
#   hfproxy-standin/redis:7-alpine      that base + Debian's redis-server 7.0
#   hfproxy-standin/nginx:1.28-alpine   that base + Debian's nginx-light 1.22
#
# Each image carries a hash of what it was made from (this script, the CA bundle, its
# deploy/standins/ folder) in the label below; an image whose hash matches is kept, so a second
# run takes a second. deploy/compose.standins.yml selects them; docs/deployment.md says how they
# differ from the official images. Needs root, docker and debootstrap (.ci/run installs them).
# DEBIAN_MIRROR overrides the mirror (default: the first one in this machine's apt sources).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
LABEL=org.hfproxy.standin.inputs
BASE=hfproxy-standin/python:3.11-slim
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

for tool in docker debootstrap sha256sum; do
  command -v "$tool" >/dev/null || { echo "local-base.sh: $tool is not installed" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "local-base.sh: the Docker engine does not answer" >&2; exit 1; }

mirror() {
  # deb822 sources (URIs: …) or the one-line format (deb URL SUITE …), whichever names Debian.
  local found
  found=$(grep -hsE '^\s*URIs:\s*\S+/debian/?\s*$' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | head -n1)
  [ -n "$found" ] || found=$(grep -hsE '^\s*deb\s+\S+/debian/?\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    awk '{print $2}' | head -n1)
  echo "${found:-http://deb.debian.org/debian}"
}
MIRROR=${DEBIAN_MIRROR:-$(mirror)}

current() {  # the inputs hash an image was built from, or nothing
  docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}

base_hash=$(cat deploy/local-base.sh "$CA_BUNDLE" | sha256sum | cut -c1-16)

if [ "$(current "$BASE")" = "$base_hash" ]; then
  echo "== $BASE is up to date ($base_hash)"
else
  echo "== $BASE: debootstrap $SUITE from $MIRROR"
  started=$SECONDS
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  ln -sf python3 "$rootfs/usr/bin/python"
  # This machine's CAs (a TLS-inspecting proxy's included), so pip inside builds trusts what we do.
  cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar -C "$rootfs" -c . | docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
    --change "LABEL $LABEL=$base_hash" \
    --change 'CMD ["python3"]' \
    - "$BASE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "   built in $((SECONDS - started)) s"
fi

for name in postgres:16-alpine redis:7-alpine nginx:1.28-alpine; do
  folder=deploy/standins/${name%%:*}
  image=hfproxy-standin/$name
  hash=$({ echo "$base_hash"; find "$folder" -type f | sort | xargs cat; } | sha256sum | cut -c1-16)
  if [ "$(current "$image")" = "$hash" ]; then
    echo "== $image is up to date ($hash)"
    continue
  fi
  echo "== $image: $folder"
  started=$SECONDS
  docker build --quiet --network host --build-arg "BASE=$BASE" --label "$LABEL=$hash" -t "$image" "$folder" >/dev/null
  echo "   built in $((SECONDS - started)) s"
done
