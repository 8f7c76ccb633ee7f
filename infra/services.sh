#!/usr/bin/env bash
# Local Apache Kafka (KRaft, single node) and PostgreSQL for development and the tests,
# started from the repository without Docker.
#
#   infra/services.sh up [kafka|postgres]...    start (or reuse) them, write .cache/services.env
#   infra/services.sh down [kafka|postgres]...  stop what this script started (idempotent)
#   infra/services.sh status                    say what runs; exit 0 only if all of it runs
#   infra/services.sh running kafka|postgres    exit 0 if that one runs
#   infra/services.sh kafka-lib                 resolve the broker's jars (once); print their folder
#
# Kafka: the broker's class path comes from Maven Central (infra/kafka/pom.xml), resolved once
# into .cache/m2 and copied to .cache/kafka/lib; a stamp keyed on the pom's hash skips Maven on
# later runs. Every fresh start wipes .cache/kafka/data and formats a new KRaft store (the
# tests create their own topics). Listens on 127.0.0.1:19092 (controller 19093).
#
# PostgreSQL: a private cluster (initdb/pg_ctl of the installed server) on 127.0.0.1:55432,
# role/password/database exchange. Data in .cache/postgres/data, kept between runs (recreated
# if it cannot start). PostgreSQL refuses to run as root, so as root the cluster belongs to
# the `postgres` OS user; when that user cannot reach .cache, the cluster lives in
# /tmp/cx-postgres-<hash of the repository path> instead.
#
# Cluster mode (CX_SERVICES_MODE=cluster; `make failover`): instead of the above, three Kafka
# nodes (KRaft, each a combined controller and broker, infra/kafka/cluster.properties) on
# 127.0.0.1:19192/19194/19196 (controllers 19193/19195/19197), topics with replication factor 3
# and min.insync.replicas=2; and PostgreSQL under pg_auto_failover (Debian's
# pg-auto-failover-cli and postgresql-NN-auto-failover): a monitor on 127.0.0.1:55532, a primary
# and a synchronous standby on 55533 and 55534, which the monitor promotes when the primary is
# lost. Everything is created afresh on every start, in .cache/cluster (PostgreSQL: like above,
# /tmp/cx-pgcluster-<hash> when the postgres OS user cannot reach .cache); the environment goes
# to .cache/cluster.env, with a multi-host DATABASE_URL (target_session_attrs=read-write).
# The failover suite (tests/failover) kills and replaces members with:
#   infra/services.sh kafka-node kill|replace|pid N     SIGKILL node N and delete its data / start
#                                                       a new node N in its place and make it a
#                                                       voter again / print its pid
#   infra/services.sh pg-node kill|start NAME           SIGKILL node1/node2's keeper and server /
#                                                       start it again (it rejoins as a standby)
#   infra/services.sh pg-node state                     the data nodes' states, as the monitor has them
#   infra/services.sh cluster-layout                    every member's ports (tests/test_compose_topology.py)
#
# If KAFKA_BOOTSTRAP_SERVERS (resp. DATABASE_URL) is set in the environment to another address
# than the local one below, `up` leaves Kafka (resp. PostgreSQL) alone: the caller has one.
#
# Settings (environment): CX_KAFKA_PORT (19092), CX_KAFKA_CONTROLLER_PORT (19093),
# CX_KAFKA_HEAP (-Xmx512m -Xms128m), CX_PG_PORT (55432), CX_PG_BIN (dir with initdb/pg_ctl),
# CX_SERVICES_TIMEOUT (seconds to wait for each server, 120),
# CX_SERVICES_STARTED_FILE (if set, `up` appends the name of each service it starts afresh, as
# it starts it: a start that fails half way is stopped too);
# cluster mode: CX_CLUSTER_KAFKA_PORT (19192: node N listens on +2(N-1), its controller one
# above), CX_CLUSTER_KAFKA_HEAP (-Xmx384m -Xms64m), CX_CLUSTER_PG_PORT (55532: the monitor;
# the two nodes on the next two ports).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
MODE="${CX_SERVICES_MODE:-single}"
case "$MODE" in single | cluster) ;; *) echo "CX_SERVICES_MODE is single or cluster, not '$MODE'" >&2; exit 2 ;; esac
if [ "$MODE" = cluster ]; then ENV_FILE="$CACHE/cluster.env"; else ENV_FILE="$CACHE/services.env"; fi
TIMEOUT="${CX_SERVICES_TIMEOUT:-120}"

KAFKA_PORT="${CX_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${CX_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP="${CX_KAFKA_HEAP:--Xmx512m -Xms128m}"
KAFKA_POM="$ROOT/infra/kafka/pom.xml"
KAFKA_HOME="$CACHE/kafka"
KAFKA_LIB="$KAFKA_HOME/lib"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_PROPS="$KAFKA_HOME/server.properties"
KAFKA_PID="$KAFKA_HOME/kafka.pid"
KAFKA_LOG="$KAFKA_HOME/broker.log"
# Any fixed KRaft cluster id will do: the store is formatted anew on every fresh start.
KAFKA_CLUSTER_ID="Y3gtZXhjaGFuZ2UtbG9jYQ"

PG_PORT="${CX_PG_PORT:-55432}"

KAFKA_URL="127.0.0.1:$KAFKA_PORT"
PG_URL="postgresql+asyncpg://exchange:exchange@127.0.0.1:$PG_PORT/exchange"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
starting() { # service: about to be started afresh (CX_SERVICES_STARTED_FILE)
    if [ -n "${CX_SERVICES_STARTED_FILE:-}" ]; then echo "$1" >>"$CX_SERVICES_STARTED_FILE"; fi
}

port_open() { # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# ------------------------------------------------------------------------------------ Kafka

# Our broker is the java process whose command line names our rendered server.properties.
kafka_is_ours() { # pid
    [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $KAFKA_PROPS"
}

kafka_pid() { # prints the pid of our running broker, from the pid file or by looking for it
    local pid=""
    if [ -f "$KAFKA_PID" ]; then
        pid="$(cat "$KAFKA_PID" 2>/dev/null || true)"
        if kafka_is_ours "$pid"; then echo "$pid"; return 0; fi
    fi
    # The pid file may be gone (killed run, `make clean`): look for an orphan of ours.
    local f
    for f in /proc/[0-9]*/cmdline; do
        pid="${f#/proc/}"; pid="${pid%/cmdline}"
        if kafka_is_ours "$pid"; then echo "$pid"; return 0; fi
    done 2>/dev/null
    return 1
}

kafka_fetch() {
    command -v java >/dev/null || die "java not found (Kafka 4.x needs Java 17+)"
    local want have=""
    want="$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
    [ -f "$KAFKA_LIB/.stamp" ] && have="$(cat "$KAFKA_LIB/.stamp")"
    if [ "$want" = "$have" ]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found: Maven resolves the Kafka broker's jars"
    log "resolving the Kafka broker from Maven Central into $KAFKA_LIB (once)"
    rm -rf "$KAFKA_LIB"
    mkdir -p "$KAFKA_LIB"
    mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" -Dmaven.repo.local="$CACHE/m2" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB" \
        >"$KAFKA_HOME/mvn.log" 2>&1 </dev/null ||
        { tail -n 40 "$KAFKA_HOME/mvn.log" >&2; die "mvn could not resolve $KAFKA_POM (log $KAFKA_HOME/mvn.log)"; }
    echo "$want" >"$KAFKA_LIB/.stamp"
}

kafka_render_config() {
    mkdir -p "$KAFKA_HOME"
    sed -e "s|@DATA_DIR@|$KAFKA_DATA|g" \
        -e "s|@BROKER_PORT@|$KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        "$ROOT/infra/kafka/server.properties" >"$KAFKA_PROPS"
}

kafka_java() { # main class and arguments
    # shellcheck disable=SC2086  # KAFKA_HEAP is a list of JVM options
    java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.properties" \
        -cp "$KAFKA_LIB/*" "$@"
}

kafka_fail() {
    log "the Kafka broker did not start: $1"
    if [ -f "$KAFKA_LOG" ]; then
        log "last lines of $KAFKA_LOG:"
        tail -n 40 "$KAFKA_LOG" >&2 || true
    fi
    kafka_stop >/dev/null 2>&1 || true
    exit 1
}

# The broker answers metadata requests through the Kafka protocol (aiokafka from .venv when
# available; otherwise the log line and the open port have to do).
kafka_protocol_ready() {
    local py="$ROOT/.venv/bin/python"
    [ -x "$py" ] || return 0
    "$py" - "$KAFKA_URL" <<'PY' 2>/dev/null
import asyncio, sys
try:
    from aiokafka.admin import AIOKafkaAdminClient
except ImportError:
    sys.exit(0)

async def main() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()

asyncio.run(asyncio.wait_for(main(), 15))
PY
}

kafka_up() {
    local pid
    if pid="$(kafka_pid)"; then
        echo "$pid" >"$KAFKA_PID"
        log "Kafka already running (pid $pid) on $KAFKA_URL: reusing it"
        return 0
    fi
    rm -f "$KAFKA_PID"
    if port_open 127.0.0.1 "$KAFKA_PORT" || port_open 127.0.0.1 "$KAFKA_CONTROLLER_PORT"; then
        die "port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT is taken by another process; free it or set KAFKA_BOOTSTRAP_SERVERS to use that broker"
    fi
    starting kafka
    kafka_fetch
    kafka_render_config
    rm -rf "$KAFKA_DATA"
    mkdir -p "$KAFKA_DATA"
    : >"$KAFKA_LOG"
    kafka_java kafka.tools.StorageTool format --standalone \
        --cluster-id "$KAFKA_CLUSTER_ID" --config "$KAFKA_PROPS" >>"$KAFKA_LOG" 2>&1 ||
        kafka_fail "formatting the KRaft store failed"
    # setsid: the broker outlives this script and is not hit by the caller's Ctrl-C.
    # The wrapper writes its pid, then becomes the JVM (exec), so the pid file names the broker.
    KAFKA_HEAP="$KAFKA_HEAP" ROOT="$ROOT" KAFKA_LIB="$KAFKA_LIB" \
        setsid nohup bash -c 'echo $$ >"$1" && exec java $KAFKA_HEAP -XX:+UseG1GC \
            -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.properties" \
            -cp "$KAFKA_LIB/*" kafka.Kafka "$2"' _ "$KAFKA_PID" "$KAFKA_PROPS" \
        >>"$KAFKA_LOG" 2>&1 </dev/null 9>&- &
    local deadline=$((SECONDS + TIMEOUT))
    while [ ! -s "$KAFKA_PID" ]; do
        [ $SECONDS -lt $deadline ] || kafka_fail "no pid file"
        sleep 0.1
    done
    pid="$(cat "$KAFKA_PID")"
    log "Kafka broker starting (pid $pid), log $KAFKA_LOG"
    until grep -q "Kafka Server started" "$KAFKA_LOG" 2>/dev/null && port_open 127.0.0.1 "$KAFKA_PORT"; do
        kill -0 "$pid" 2>/dev/null || kafka_fail "the broker exited"
        [ $SECONDS -lt $deadline ] || kafka_fail "not ready after ${TIMEOUT}s"
        sleep 0.2
    done
    until kafka_protocol_ready; do
        kill -0 "$pid" 2>/dev/null || kafka_fail "the broker exited"
        [ $SECONDS -lt $deadline ] || kafka_fail "no answer to a metadata request after ${TIMEOUT}s"
        sleep 0.5
    done
    log "Kafka ready on $KAFKA_URL"
}

kafka_stop() {
    local pid
    if ! pid="$(kafka_pid)"; then
        rm -f "$KAFKA_PID"
        return 0
    fi
    log "stopping Kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 300); do   # controlled shutdown: up to 30 s
        kafka_is_ours "$pid" || break
        sleep 0.1
    done
    if kafka_is_ours "$pid"; then
        log "Kafka did not stop in 30 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$KAFKA_PID"
}

# ------------------------------------------------------------------------------- PostgreSQL

pg_find_bin() {
    if [ -n "${CX_PG_BIN:-}" ]; then echo "$CX_PG_BIN"; return 0; fi
    local d
    # Debian/Ubuntu keep the server binaries out of PATH: take the newest installed major.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
        [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

pg_setup_paths() { # "soft": return 1 instead of failing when PostgreSQL is not installed
    if ! PG_BIN="$(pg_find_bin)"; then
        [ "${1:-}" = soft ] && return 1
        die "PostgreSQL server binaries (initdb, pg_ctl) not found; set CX_PG_BIN or DATABASE_URL"
    fi
    PG_BASE="$CACHE/postgres"
    PG_RUNAS=()
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' OS user to run PostgreSQL"
        PG_RUNAS=(runuser -u postgres --)
        mkdir -p "$CACHE"
        if ! (cd / && runuser -u postgres -- test -x "$CACHE"); then
            PG_BASE="/tmp/cx-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
        fi
    fi
    PG_DATA="$PG_BASE/data"
    PG_SOCK="$PG_BASE/run"
    PG_LOG="$PG_BASE/postgres.log"
    if [ ${#PG_SOCK} -gt 80 ]; then   # unix socket paths are limited to ~107 bytes
        PG_SOCK="/tmp/cx-pgsock-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
    fi
}

pg_as() { (cd / && "${PG_RUNAS[@]}" "$@"); }

pg_running() {
    [ -f "$PG_DATA/PG_VERSION" ] && pg_as "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

pg_init() {
    log "creating a PostgreSQL cluster in $PG_DATA"
    rm -rf "$PG_DATA"
    mkdir -p "$PG_BASE" "$PG_SOCK"
    if is_root; then chown postgres: "$PG_BASE" "$PG_SOCK"; fi
    # Unix socket: trust; TCP: password (superuser postgres/postgres, exchange/exchange).
    local pwfile="$PG_BASE/.superuser-password"
    echo postgres >"$pwfile"
    if is_root; then chown postgres: "$pwfile"; fi
    pg_as "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile" >"$PG_BASE/initdb.log" 2>&1 ||
        { tail -n 30 "$PG_BASE/initdb.log" >&2; rm -f "$pwfile"; die "initdb failed"; }
    rm -f "$pwfile"
    cat >>"$PG_DATA/postgresql.conf" <<EOF

# --- compute-exchange local/test settings (infra/services.sh) ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
log_min_messages = warning
log_min_error_statement = error
EOF
}

pg_start_server() {
    mkdir -p "$PG_SOCK"
    if is_root; then chown postgres: "$PG_BASE" "$PG_SOCK"; fi
    # pg_ctl deals with a stale postmaster.pid left by a SIGKILLed server.
    # 9>&-: the server must not inherit (and hold) the lock of with_lock.
    pg_as "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" -s >/dev/null 2>&1 9>&-
}

pg_ready() {
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1
}

pg_psql() {
    pg_as "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres "$@"
}

pg_ensure_db() {
    pg_psql -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'exchange') THEN
        CREATE ROLE exchange LOGIN PASSWORD 'exchange' CREATEDB;
    END IF;
END
$$;
SQL
    if [ "$(pg_psql -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = 'exchange'")" != 1 ]; then
        pg_psql -d postgres -c "CREATE DATABASE exchange OWNER exchange" >/dev/null
    fi
}

pg_up() {
    pg_setup_paths
    if pg_running; then
        log "PostgreSQL already running ($PG_DATA) on 127.0.0.1:$PG_PORT: reusing it"
        pg_ensure_db
        return 0
    fi
    if port_open 127.0.0.1 "$PG_PORT"; then
        die "port $PG_PORT is taken by another process; free it or set DATABASE_URL to use that server"
    fi
    starting postgres
    if [ ! -f "$PG_DATA/PG_VERSION" ] ||
        [ "$(cat "$PG_DATA/PG_VERSION")" != "$("$PG_BIN/pg_ctl" --version | sed -E 's/.* ([0-9]+).*/\1/')" ]; then
        pg_init
    fi
    if ! pg_start_server; then
        log "PostgreSQL did not start from the existing data; recreating the cluster"
        tail -n 20 "$PG_LOG" >&2 2>/dev/null || true
        pg_init
        pg_start_server || { tail -n 40 "$PG_LOG" >&2 2>/dev/null || true; die "PostgreSQL did not start (log $PG_LOG)"; }
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until pg_ready; do
        [ $SECONDS -lt $deadline ] || { tail -n 40 "$PG_LOG" >&2 || true; die "PostgreSQL not ready after ${TIMEOUT}s"; }
        sleep 0.2
    done
    pg_ensure_db
    log "PostgreSQL ready on 127.0.0.1:$PG_PORT (data $PG_DATA)"
}

pg_stop() {
    pg_setup_paths soft || return 0
    if pg_running; then
        log "stopping PostgreSQL ($PG_DATA)"
        pg_as "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s >/dev/null 2>&1 ||
            pg_as "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 30 -s >/dev/null 2>&1 || true
    fi
}

# ------------------------------------------------------------------------------------- main

# A variable set to anything but our own address means the caller brings their own server.
kafka_external() { [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ] && [ "$KAFKA_BOOTSTRAP_SERVERS" != "$KAFKA_URL" ]; }
pg_external() { [ -n "${DATABASE_URL:-}" ] && [ "$DATABASE_URL" != "$PG_URL" ]; }

write_env() {
    local tmp="$ENV_FILE.tmp.$$"
    {
        echo "# Written by infra/services.sh: the local services it manages. Source it."
        if ! kafka_external && kafka_pid >/dev/null; then echo "export KAFKA_BOOTSTRAP_SERVERS=$KAFKA_URL"; fi
        if ! pg_external && pg_setup_paths soft && pg_running; then echo "export DATABASE_URL=$PG_URL"; fi
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

with_lock() { # one up/down at a time (several shells may share the tree)
    mkdir -p "$CACHE"
    if command -v flock >/dev/null; then
        exec 9>"$CACHE/services.lock"
        flock -w "$((TIMEOUT * 2))" 9 || die "another infra/services.sh holds $CACHE/services.lock"
    fi
}

selected() { # name, then the requested names (none = all)
    local want="$1"; shift
    [ $# -eq 0 ] && return 0
    local s
    for s in "$@"; do [ "$s" = "$want" ] && return 0; done
    return 1
}

# shellcheck source=infra/services-cluster.sh
. "$ROOT/infra/services-cluster.sh"
if [ "$MODE" = cluster ]; then
    # The names the caller may already have, and what up/down/running do, in this mode.
    KAFKA_URL="$(ck_bootstrap)"
    PG_URL="$(pc_url 0)"
    kafka_up() { cluster_kafka_up; }
    kafka_stop() { cluster_kafka_stop; }
    pg_up() { cluster_pg_up; }
    pg_stop() { cluster_pg_stop; }
    write_env() { cluster_write_env; }
fi

cmd="${1:-}"
shift || true
case "$cmd" in
up | down | running | status)
    for s in "$@"; do
        case "$s" in kafka | postgres) ;; *) die "unknown service '$s' (kafka, postgres)" ;; esac
    done
    ;;
esac
case "$cmd" in
up)
    with_lock
    if selected kafka "$@"; then
        if kafka_external; then
            log "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS is set: not starting Kafka"
        else
            kafka_up
        fi
    fi
    if selected postgres "$@"; then
        if pg_external; then
            log "DATABASE_URL is set: not starting PostgreSQL"
        else
            pg_up
        fi
    fi
    write_env
    log "environment: source $ENV_FILE"
    ;;
down)
    with_lock
    if selected kafka "$@"; then kafka_stop; fi
    if selected postgres "$@"; then pg_stop; fi
    write_env
    ;;
running)
    [ $# -eq 1 ] || die "usage: $0 running kafka|postgres"
    if [ "$MODE" = cluster ]; then cluster_running "$1"; exit; fi
    case "$1" in
    kafka) kafka_pid >/dev/null ;;
    postgres) pg_setup_paths soft && pg_running ;;
    esac
    ;;
kafka-lib)
    # For tests that run a private broker (tests/e2e/private_kafka.py) from the same jars.
    with_lock
    mkdir -p "$KAFKA_HOME"
    kafka_fetch
    echo "$KAFKA_LIB"
    ;;
kafka-node)
    cluster_kafka_node "$@"
    ;;
pg-node)
    cluster_pg_node "$@"
    ;;
cluster-layout)
    cluster_layout
    ;;
status)
    if [ "$MODE" = cluster ]; then cluster_status; exit; fi
    rc=0
    if pid="$(kafka_pid)"; then echo "kafka:    running (pid $pid) on $KAFKA_URL"; else echo "kafka:    stopped"; rc=1; fi
    if pg_setup_paths soft && pg_running; then echo "postgres: running on 127.0.0.1:$PG_PORT (data $PG_DATA)"; else echo "postgres: stopped"; rc=1; fi
    [ -f "$ENV_FILE" ] && { echo "--- $ENV_FILE"; grep '^export' "$ENV_FILE" || true; }
    exit $rc
    ;;
*)
    echo "usage: $0 up|down|status [kafka|postgres]... | running kafka|postgres | kafka-lib" >&2
    echo "       CX_SERVICES_MODE=cluster $0 ... | kafka-node kill|replace|pid N | pg-node kill|start NAME | pg-node state" >&2
    exit 2
    ;;
esac
