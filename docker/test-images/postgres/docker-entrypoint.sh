#!/usr/bin/env bash
# Entrypoint of dataflow's PostgreSQL test image. It follows the contract of the official
# `postgres` image, which testcontainers-modules' Postgres relies on:
#
#   POSTGRES_PASSWORD          password of POSTGRES_USER (required unless
#                              POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER              superuser made by initdb (default: postgres)
#   POSTGRES_DB                database created at the first start (default: POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for connections from outside the container
#                              (default: scram-sha-256; `trust` needs no password)
#   POSTGRES_INITDB_ARGS       extra initdb arguments, e.g. "--locale=C"
#   VAR_FILE                   for each of the above: read the value from that file
#   /docker-entrypoint-initdb.d/*.sql, *.sql.gz, *.sh  run once, after the database is created
#
# Arguments that start with `-` go to postgres (`-c fsync=off`); any other command runs as is.
# The first start with an empty $PGDATA runs a temporary server on the Unix socket only
# (its log goes to stdout, as pg_ctl writes it), then the real one on 0.0.0.0:5432, whose log goes
# to stderr; each prints "database system is ready to accept connections".
set -Eeuo pipefail

if [ $# -eq 0 ] || [ "${1:0:1}" = - ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi

# Started as root (`docker run --user root`, or a mounted volume owned by root): hand the data
# directory to postgres and continue as postgres, which initdb and postgres insist on.
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

err() { printf 'docker-entrypoint: error: %s\n' "$*" >&2; exit 1; }

# VAR or VAR_FILE (not both) into VAR, with a default.
file_env() {
  local var="$1" default="${2:-}" file_var="${1}_FILE"
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    err "both $var and $file_var are set; set one"
  fi
  local value="$default"
  if [ -n "${!var:-}" ]; then
    value="${!var}"
  elif [ -n "${!file_var:-}" ]; then
    value="$(< "${!file_var}")" || err "cannot read $file_var=${!file_var}"
  fi
  export "$var"="$value"
  unset "$file_var"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_USER postgres
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  auth="${POSTGRES_HOST_AUTH_METHOD:-}"
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
    err "the database is not initialised and POSTGRES_PASSWORD is not set: set POSTGRES_PASSWORD (the password of POSTGRES_USER, default postgres), or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without a password"
  fi
  : "${auth:=scram-sha-256}"

  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" 2>/dev/null || true
  [ -w "$PGDATA" ] || err "$PGDATA is not writable by $(id -un) (uid $(id -u)); start the container as root once, or give the directory to uid $(id -u)"

  # initdb: local connections (the socket, 127.0.0.1, ::1) are trusted, as in the official image.
  # --no-sync: a test server's fresh cluster need not survive a power cut, and the sync of every
  # file costs seconds at each container start.
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words
  if [ -n "$POSTGRES_PASSWORD" ]; then
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --no-sync $POSTGRES_INITDB_ARGS
  else
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --no-sync $POSTGRES_INITDB_ARGS
  fi
  printf "\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
  printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

  # A temporary server on the Unix socket only, with the same options, for the setup below:
  # nothing outside the container can connect before the setup is done.
  export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD"
  pg_ctl -D "$PGDATA" -w start -o "$(printf '%q ' "${@:2}" -c listen_addresses= -p 5432)"

  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER")
  exists="$("${psql[@]}" --dbname postgres -tA --set db="$POSTGRES_DB" <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")"
  if [ -z "$exists" ]; then
    "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi

  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          echo "docker-entrypoint: running $f"; "$f"
        else
          echo "docker-entrypoint: sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi ;;
      *.sql) echo "docker-entrypoint: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "docker-entrypoint: running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$POSTGRES_DB" ;;
      *) echo "docker-entrypoint: ignoring $f" ;;
    esac
  done

  pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  echo
  echo "PostgreSQL init process complete; ready for start up."
  echo
fi

exec "$@"
