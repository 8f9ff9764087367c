#!/bin/sh
# What the official redis image's entrypoint does: options alone mean redis-server's; the server
# runs as the redis user; without a config file that says otherwise, protected mode is off (the
# container's network is what protects it, and the other containers must reach it).
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  chown -R redis:redis .
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
  protected=yes
  if [ -f "${2:-}" ] && grep -q '^protected-mode' "$2"; then
    protected=
  fi
  if [ -n "$protected" ]; then
    set -- "$@" --protected-mode no
  fi
fi

exec "$@"
