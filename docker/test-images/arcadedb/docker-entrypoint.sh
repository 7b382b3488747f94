#!/usr/bin/env bash
# Entrypoint of dataflow's ArcadeDB test image: ArcadeDB's server with the Bolt plugin, as
# tests/src/harness/recipe.rs starts it on the host, but listening on every interface.
#
#   ARCADEDB_ROOT_PASSWORD  password of the user `root` (required, at least 8 characters;
#                           set at the first start in an empty /var/lib/arcadedb)
#   ARCADEDB_DATABASE       database created at start if missing, owned by root
#                           (default: dataflow; empty: none)
#   ARCADEDB_HEAP           the JVM's -Xmx (default: 512m)
#   JAVA_OPTS               more JVM options, last, so they win (-Darcadedb.<setting>=...)
#
# Arguments that start with `-` are JVM options too; any other command runs as is (`bash`).
# Ports: Bolt 7687, HTTP 2480. Ready when GET /api/v1/ready answers 204.
set -Eeuo pipefail

if [ $# -gt 0 ] && [ "${1:0:1}" != - ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  chown -R arcadedb:arcadedb /var/lib/arcadedb
  exec setpriv --reuid=arcadedb --regid=arcadedb --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

err() { printf 'docker-entrypoint: error: %s\n' "$*" >&2; exit 1; }

password="${ARCADEDB_ROOT_PASSWORD:-}"
[ -n "$password" ] || err "ARCADEDB_ROOT_PASSWORD is not set: set it to the password of ArcadeDB's user root (at least 8 characters)"
[ "${#password}" -ge 8 ] || err "ARCADEDB_ROOT_PASSWORD is shorter than 8 characters, which ArcadeDB refuses"
case "$password" in
  *[[:space:]]*) err "ARCADEDB_ROOT_PASSWORD contains white space, which ArcadeDB's command line does not take" ;;
esac
database="${ARCADEDB_DATABASE-dataflow}"
home="${ARCADEDB_HOME:-/var/lib/arcadedb}"
cd "$home"

args=(
  -Xmx"${ARCADEDB_HEAP:-512m}"
  -cp '/opt/arcadedb/lib/*'
  -Darcadedb.server.rootPath="$home"
  -Darcadedb.server.databaseDirectory="$home/databases"
  -Darcadedb.server.rootPassword="$password"
  -Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin
  -Darcadedb.bolt.port=7687
  -Darcadedb.bolt.host=0.0.0.0
  -Darcadedb.server.httpIncomingHost=0.0.0.0
  -Darcadedb.server.httpIncomingPort=2480
)
if [ -n "$database" ]; then
  args+=(-Darcadedb.server.defaultDatabases="${database}[root]")
fi
# shellcheck disable=SC2206 # JAVA_OPTS is a list of words, as in ArcadeDB's own images
args+=(${JAVA_OPTS:-} "$@" com.arcadedb.server.ArcadeDBServer)

# The password is on the command line (ArcadeDB reads it from a system property); the JVM is
# PID 1 and gets the stop signal itself, and shuts ArcadeDB down cleanly on SIGTERM.
exec /opt/arcadedb/jre/bin/java "${args[@]}"
