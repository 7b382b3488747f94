#!/usr/bin/env bash
# Entrypoint of dataflow's Redis test image, as the official `redis` image's: arguments that start
# with `-` (or a *.conf file) go to redis-server; without a configuration file, protected mode is
# off so that clients outside the container are served (Redis listens on every interface).
set -Eeuo pipefail

if [ $# -eq 0 ] || [ "${1:0:1}" = - ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ]; then
  if [ "$(id -u)" = 0 ]; then
    chown -R redis:redis /data 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups -- "${BASH_SOURCE[0]}" "$@"
  fi
  if [ "${2:-}" = "" ] || [ "${2%.conf}" = "${2}" ]; then
    case " $* " in
      *" --protected-mode "*) ;;
      *) set -- "$@" --protected-mode no ;;
    esac
  fi
fi

exec "$@"
