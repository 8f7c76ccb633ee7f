# The cluster mode of infra/services.sh (CX_SERVICES_MODE=cluster), sourced by it: three Kafka
# nodes and PostgreSQL under pg_auto_failover, on 127.0.0.1. See the header of services.sh.
# Uses its helpers (log, die, port_open, is_root, kafka_fetch, pg_find_bin) and variables.
# shellcheck shell=bash

CLUSTER_HOME="$CACHE/cluster"

# ------------------------------------------------------------------------------- Kafka nodes

CK_BASE_PORT="${CX_CLUSTER_KAFKA_PORT:-19192}"
CK_HEAP="${CX_CLUSTER_KAFKA_HEAP:--Xmx384m -Xms64m}"
CK_NODES=(1 2 3)
# Any fixed KRaft cluster id will do: the nodes are formatted anew on every fresh start.
CK_CLUSTER_ID="Y3gtZXhjaGFuZ2UtY2x1cw"

ck_port() { echo $((CK_BASE_PORT + 2 * ($1 - 1))); }
ck_controller_port() { echo $((CK_BASE_PORT + 2 * ($1 - 1) + 1)); }
ck_dir() { echo "$CLUSTER_HOME/kafka-$1"; }
ck_join() { # separator, then words
    local sep="$1" out="" w
    shift
    for w in "$@"; do out="${out:+$out$sep}$w"; done
    echo "$out"
}
ck_bootstrap() {
    local n parts=()
    for n in "${CK_NODES[@]}"; do parts+=("127.0.0.1:$(ck_port "$n")"); done
    ck_join , "${parts[@]}"
}
ck_controllers() {
    local n parts=()
    for n in "${CK_NODES[@]}"; do parts+=("127.0.0.1:$(ck_controller_port "$n")"); done
    ck_join , "${parts[@]}"
}

ck_is_ours() { # pid node
    [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $(ck_dir "$2")/server.properties"
}

ck_pid() { # node: prints the pid of that running node
    local pidfile pid f
    pidfile="$(ck_dir "$1")/kafka.pid"
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        if ck_is_ours "$pid" "$1"; then echo "$pid"; return 0; fi
    fi
    for f in /proc/[0-9]*/cmdline; do
        pid="${f#/proc/}"; pid="${pid%/cmdline}"
        if ck_is_ours "$pid" "$1"; then echo "$pid"; return 0; fi
    done 2>/dev/null
    return 1
}

ck_render() { # node
    local dir
    dir="$(ck_dir "$1")"
    mkdir -p "$dir"
    sed -e "s|@NODE_ID@|$1|g" \
        -e "s|@DATA_DIR@|$dir/data|g" \
        -e "s|@BROKER_PORT@|$(ck_port "$1")|g" \
        -e "s|@CONTROLLER_PORT@|$(ck_controller_port "$1")|g" \
        -e "s|@CONTROLLERS@|$(ck_controllers)|g" \
        "$ROOT/infra/kafka/cluster.properties" >"$dir/server.properties"
}

ck_java() { # main class and arguments
    # shellcheck disable=SC2086  # CK_HEAP is a list of JVM options
    java $CK_HEAP -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.properties" \
        -cp "$KAFKA_LIB/*" "$@"
}

# A KRaft directory id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid text).
ck_new_directory_id() { head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='; }

ck_format() { # node, then the StorageTool format options naming the controllers
    local n="$1" dir
    shift
    dir="$(ck_dir "$n")"
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    ck_java kafka.tools.StorageTool format --cluster-id "$CK_CLUSTER_ID" \
        --config "$dir/server.properties" "$@" >>"$dir/node.log" 2>&1 ||
        { tail -n 30 "$dir/node.log" >&2; die "formatting Kafka node $n failed"; }
}

ck_launch() { # node: start it in the background
    local dir
    dir="$(ck_dir "$1")"
    rm -f "$dir/kafka.pid"
    CK_HEAP="$CK_HEAP" ROOT="$ROOT" KAFKA_LIB="$KAFKA_LIB" \
        setsid nohup bash -c 'echo $$ >"$1" && exec java $CK_HEAP -XX:+UseSerialGC \
            -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.properties" \
            -cp "$KAFKA_LIB/*" kafka.Kafka "$2"' _ "$dir/kafka.pid" "$dir/server.properties" \
        >>"$dir/node.log" 2>&1 </dev/null 9>&- &
}

ck_wait_started() { # node, count of "Kafka Server started" lines the log had before the start
    local n="$1" before="$2" dir pid deadline=$((SECONDS + TIMEOUT))
    dir="$(ck_dir "$n")"
    while [ ! -s "$dir/kafka.pid" ]; do
        [ $SECONDS -lt $deadline ] || die "Kafka node $n wrote no pid file"
        sleep 0.1
    done
    pid="$(cat "$dir/kafka.pid")"
    until [ "$(grep -c "Kafka Server started" "$dir/node.log" 2>/dev/null)" -gt "$before" ] &&
        port_open 127.0.0.1 "$(ck_port "$n")"; do
        kill -0 "$pid" 2>/dev/null || { tail -n 40 "$dir/node.log" >&2; die "Kafka node $n exited (log $dir/node.log)"; }
        [ $SECONDS -lt $deadline ] || { tail -n 40 "$dir/node.log" >&2; die "Kafka node $n not ready after ${TIMEOUT}s"; }
        sleep 0.2
    done
    log "Kafka node $n ready on 127.0.0.1:$(ck_port "$n") (pid $pid)"
}

ck_started_count() { grep -c "Kafka Server started" "$(ck_dir "$1")/node.log" 2>/dev/null || true; }

cluster_kafka_up() {
    local n running=0 voters=() ids=()
    for n in "${CK_NODES[@]}"; do
        if ck_pid "$n" >/dev/null; then running=$((running + 1)); fi
    done
    if [ "$running" -eq "${#CK_NODES[@]}" ]; then
        log "Kafka cluster already running on $(ck_bootstrap): reusing it"
        return 0
    fi
    [ "$running" -eq 0 ] || die "only $running of the Kafka nodes run; \`CX_SERVICES_MODE=cluster $0 down kafka\` first"
    for n in "${CK_NODES[@]}"; do
        if port_open 127.0.0.1 "$(ck_port "$n")" || port_open 127.0.0.1 "$(ck_controller_port "$n")"; then
            die "port $(ck_port "$n") or $(ck_controller_port "$n") is taken; set CX_CLUSTER_KAFKA_PORT"
        fi
    done
    starting kafka
    kafka_fetch
    for n in "${CK_NODES[@]}"; do
        ids[n]="$(ck_new_directory_id)"
        voters+=("$n@127.0.0.1:$(ck_controller_port "$n"):${ids[n]}")
    done
    for n in "${CK_NODES[@]}"; do
        ck_render "$n"
        : >"$(ck_dir "$n")/node.log"
        ck_format "$n" --initial-controllers "$(ck_join , "${voters[@]}")"
    done
    # All at once: a node's broker waits for the controllers' quorum, which needs two of them.
    for n in "${CK_NODES[@]}"; do ck_launch "$n"; done
    for n in "${CK_NODES[@]}"; do ck_wait_started "$n" 0; done
    KAFKA_URL="$(ck_bootstrap)"
    local deadline=$((SECONDS + TIMEOUT))
    until kafka_protocol_ready; do
        [ $SECONDS -lt $deadline ] || die "the Kafka cluster does not answer metadata requests after ${TIMEOUT}s"
        sleep 0.5
    done
    log "Kafka cluster ready on $(ck_bootstrap)"
}

ck_stop_node() { # node, signal
    local pid i
    pid="$(ck_pid "$1")" || return 0
    kill "-$2" "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        ck_is_ours "$pid" "$1" || break
        sleep 0.1
    done
    if ck_is_ours "$pid" "$1"; then
        log "Kafka node $1 did not stop in 30 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$(ck_dir "$1")/kafka.pid"
}

cluster_kafka_stop() {
    local n
    # All at once: a node's controlled shutdown waits for the others to take its partitions,
    # and the last ones cannot once the quorum is gone.
    for n in "${CK_NODES[@]}"; do
        if pid="$(ck_pid "$n")"; then log "stopping Kafka node $n (pid $pid)"; kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for n in "${CK_NODES[@]}"; do ck_stop_node "$n" TERM; done
}

ck_metadata_quorum() { # arguments of kafka-metadata-quorum
    ck_java org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-controller "$(ck_controllers)" "$@"
}

# The directory id the quorum has for voter `node` (the lost disk's, when it was lost); empty
# if it has no such voter. Asks again while the controllers do not answer (an election).
ck_voter_directory_id() {
    local status deadline=$((SECONDS + TIMEOUT))
    until status="$(ck_metadata_quorum describe --status 2>&1)" && grep -q '^CurrentVoters:' <<<"$status"; do
        [ $SECONDS -lt $deadline ] || die "the controllers do not describe their quorum: ${status: -2000}"
        sleep 1
    done
    python3 -c '
import json, sys
for line in sys.stdin:
    name, _, value = line.partition(":")
    if name.strip() == "CurrentVoters":
        for voter in json.loads(value):
            if voter["id"] == int(sys.argv[1]):
                print(voter["directoryId"])
' "$1" <<<"$status"
}

# Replacing a node whose disk is gone, as Kafka's documentation describes for controllers of a
# dynamic quorum: format an empty store that joins no quorum by itself, start it (it catches
# up as an observer and its broker takes its replicas back from the leaders), remove the lost
# voter and add the new one.
ck_replace() { # node
    local n="$1" dir old new before deadline
    dir="$(ck_dir "$n")"
    ! ck_pid "$n" >/dev/null || die "Kafka node $n is running; kill it first"
    old="$(ck_voter_directory_id "$n")"
    ck_render "$n"
    before="$(ck_started_count "$n")"
    before="${before:-0}"
    ck_format "$n" --no-initial-controllers
    new="$(sed -n 's/^directory.id=//p' "$dir/data/meta.properties")"
    ck_launch "$n"
    ck_wait_started "$n" "$before"
    deadline=$((SECONDS + TIMEOUT))
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        until ck_metadata_quorum remove-controller --controller-id "$n" \
            --controller-directory-id "$old" >>"$dir/node.log" 2>&1; do
            [ $SECONDS -lt $deadline ] || die "could not remove the lost controller $n ($old)"
            sleep 1
        done
    fi
    until [ "$(ck_voter_directory_id "$n")" = "$new" ]; do
        ck_metadata_quorum --command-config "$dir/server.properties" add-controller >>"$dir/node.log" 2>&1 || true
        [ $SECONDS -lt $deadline ] || die "could not add controller $n ($new) to the quorum"
        sleep 1
    done
    log "Kafka node $n replaced: voter directory $old -> $new"
}

cluster_kafka_node() { # kill|replace|pid node
    local action="${1:-}" n="${2:-}" pid
    case "$n" in 1 | 2 | 3) ;; *) die "usage: $0 kafka-node kill|replace|pid 1|2|3" ;; esac
    KAFKA_LIB="$KAFKA_HOME/lib"
    case "$action" in
    kill)
        pid="$(ck_pid "$n")" || die "Kafka node $n is not running"
        kill -KILL "$pid"
        while ck_is_ours "$pid" "$n"; do sleep 0.05; done
        rm -rf "$(ck_dir "$n")/data" "$(ck_dir "$n")/kafka.pid"
        log "Kafka node $n killed (pid $pid) and its data deleted"
        ;;
    replace) ck_replace "$n" ;;
    pid) ck_pid "$n" ;;
    *) die "usage: $0 kafka-node kill|replace|pid 1|2|3" ;;
    esac
}

# --------------------------------------------------------------- PostgreSQL, pg_auto_failover

PC_BASE_PORT="${CX_CLUSTER_PG_PORT:-55532}"
PC_MONITOR_PORT="$PC_BASE_PORT"
# Settlement shard K (CX_SETTLEMENT_SHARDS) is a formation of its own under the one monitor:
# the `default` formation for shard 0 (node1 and node2), `shardK` for shard K (nodes 2K+1 and
# 2K+2), each a primary and a synchronous standby failed over on its own.
PC_SHARDS="${CX_CLUSTER_SETTLEMENT_SHARDS:-2}"
case "$PC_SHARDS" in [1-9]) ;; *) die "CX_CLUSTER_SETTLEMENT_SHARDS is 1 to 9, not '$PC_SHARDS'" ;; esac
PC_NODES=()
for ((pc_n = 1; pc_n <= 2 * PC_SHARDS; pc_n++)); do PC_NODES+=("node$pc_n"); done
# After this long cut off from the monitor and its standby, a primary stops taking writes
# (infra/postgres/monitor-failover.sql gives it twice that to demote itself).
PC_PARTITION_TIMEOUT_S=5

pc_port() { # monitor|nodeN
    case "$1" in monitor) echo "$PC_BASE_PORT" ;; node*) echo $((PC_BASE_PORT + ${1#node})) ;; esac
}

pc_formation() { # shard
    if [ "$1" -eq 0 ]; then echo default; else echo "shard$1"; fi
}

pc_is_node() { # name: one of this cluster's data nodes
    local node
    for node in "${PC_NODES[@]}"; do [ "$node" = "$1" ] && return 0; done
    return 1
}

pc_setup_paths() { # "soft": return 1 instead of failing when something is not installed
    if ! PG_BIN="$(pg_find_bin)" || ! command -v pg_autoctl >/dev/null; then
        [ "${1:-}" = soft ] && return 1
        die "pg_autoctl or the PostgreSQL server not found (apt-get install pg-auto-failover-cli postgresql-15-auto-failover)"
    fi
    PC_BASE="$CLUSTER_HOME/postgres"
    PG_RUNAS=()
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' OS user to run PostgreSQL"
        PG_RUNAS=(runuser -u postgres --)
        mkdir -p "$CACHE"
        if ! (cd / && runuser -u postgres -- test -x "$CACHE"); then
            PC_BASE="/tmp/cx-pgcluster-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
        fi
    fi
}

# pg_autoctl keeps its configuration and state under XDG folders: ours, inside the base.
pc_as() {
    (cd / && "${PG_RUNAS[@]}" env XDG_CONFIG_HOME="$PC_BASE/xdg/config" \
        XDG_DATA_HOME="$PC_BASE/xdg/data" XDG_RUNTIME_DIR="$PC_BASE/xdg/run" PG_CONFIG= "$@")
}

pc_psql() { # port database, then psql arguments
    local port="$1" db="$2"
    shift 2
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

pc_monitor_sql() { pc_psql "$PC_MONITOR_PORT" pg_auto_failover -tA -c "$1"; }

pc_is_ours() { # pid name
    [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] &&
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "--pgdata $PC_BASE/$2 "
}

pc_pid() { # name: the pid of its pg_autoctl supervisor
    local pidfile="$PC_BASE/$1.pid" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    pc_is_ours "$pid" "$1" && echo "$pid"
}

pc_launch() { # name, then the pg_autoctl command
    local name="$1"
    shift
    rm -f "$PC_BASE/$name.pid"
    # setsid: its own process group, which `pg-node kill` and `down` signal as a whole.
    # `--run` keeps pg_autoctl in the foreground as the supervisor of its Postgres.
    PC_PIDFILE="$PC_BASE/$name.pid" setsid nohup bash -c 'echo $$ >"$PC_PIDFILE" && exec "$@"' _ \
        "${PG_RUNAS[@]}" env XDG_CONFIG_HOME="$PC_BASE/xdg/config" \
        XDG_DATA_HOME="$PC_BASE/xdg/data" XDG_RUNTIME_DIR="$PC_BASE/xdg/run" PG_CONFIG= \
        "$@" --pgdata "$PC_BASE/$name" --pgctl "$PG_BIN/pg_ctl" \
        >>"$PC_BASE/$name.log" 2>&1 </dev/null 9>&- &
    local deadline=$((SECONDS + 10))
    while [ ! -s "$PC_BASE/$name.pid" ]; do
        [ $SECONDS -lt $deadline ] || die "pg_autoctl $name wrote no pid file"
        sleep 0.05
    done
}

pc_wait() { # description, then a command that succeeds when done
    local what="$1" deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { tail -n 30 "$PC_BASE"/*.log >&2 || true; die "PostgreSQL cluster: $what not reached after ${TIMEOUT}s"; }
        sleep 0.3
    done
}

# `name:state` of every data node, as the monitor sees them (reported = goal).
pc_states() {
    pc_monitor_sql "SELECT string_agg(nodename || ':' || CASE WHEN reportedstate = goalstate
        THEN reportedstate::text ELSE reportedstate || '>' || goalstate END, ' ' ORDER BY nodeid)
        FROM pgautofailover.node"
}
pc_states_are() { [ "$(pc_states)" = "$1" ]; }

pc_url() { # shard: its formation's two servers, writes going to whichever is primary
    local first=$((2 * $1 + 1))
    echo "postgresql+asyncpg://exchange:exchange@/exchange?host=127.0.0.1:$(pc_port "node$first")&host=127.0.0.1:$(pc_port "node$((first + 1))")&target_session_attrs=read-write"
}

pc_shard_urls() { # the shards beyond the home one, as CX_SETTLEMENT_SHARDS lists them
    local k urls=()
    for ((k = 1; k < PC_SHARDS; k++)); do urls+=("$(pc_url "$k")"); done
    echo "${urls[*]}"
}

pc_all_running() {
    local name
    for name in monitor "${PC_NODES[@]}"; do pc_pid "$name" >/dev/null || return 1; done
}

cluster_pg_up() {
    pc_setup_paths
    if pc_all_running; then
        log "PostgreSQL cluster already running ($PC_BASE): reusing it"
        return 0
    fi
    cluster_pg_stop
    local name
    for name in monitor "${PC_NODES[@]}"; do
        if port_open 127.0.0.1 "$(pc_port "$name")"; then
            die "port $(pc_port "$name") is taken; set CX_CLUSTER_PG_PORT"
        fi
    done
    starting postgres
    rm -rf "$PC_BASE"
    mkdir -p "$PC_BASE/xdg/config" "$PC_BASE/xdg/data" "$PC_BASE/xdg/run"
    chmod 700 "$PC_BASE/xdg/run"
    if is_root; then chown -R postgres: "$PC_BASE"; fi
    local monitor_uri="postgres://autoctl_node@127.0.0.1:$PC_MONITOR_PORT/pg_auto_failover?sslmode=disable"
    log "starting the pg_auto_failover monitor on 127.0.0.1:$PC_MONITOR_PORT"
    pc_launch monitor pg_autoctl create monitor --run --hostname 127.0.0.1 \
        --pgport "$PC_MONITOR_PORT" --auth trust --no-ssl
    pc_wait "the monitor" pc_monitor_sql "SELECT 1 FROM pgautofailover.formation"
    pc_psql "$PC_MONITOR_PORT" pg_auto_failover -f "$ROOT/infra/postgres/monitor-failover.sql" >/dev/null
    local shard primary standby expected=""
    for ((shard = 0; shard < PC_SHARDS; shard++)); do
        primary="node$((2 * shard + 1))" standby="node$((2 * shard + 2))"
        if [ "$shard" -gt 0 ]; then
            pc_as pg_autoctl create formation --monitor "$monitor_uri" \
                --formation "$(pc_formation "$shard")" --kind pgsql --dbname exchange >/dev/null
        fi
        for name in "$primary" "$standby"; do
            log "starting PostgreSQL $name (settlement shard $shard) on 127.0.0.1:$(pc_port "$name")"
            pc_launch "$name" pg_autoctl create postgres --run --name "$name" --hostname 127.0.0.1 \
                --pgport "$(pc_port "$name")" --monitor "$monitor_uri" --auth trust --no-ssl \
                --dbname exchange --listen 127.0.0.1 --formation "$(pc_formation "$shard")"
            if [ "$name" = "$primary" ]; then
                pc_wait "$name single" pc_states_are "$expected${expected:+ }$name:single"
                # The standby's base backup starts with a checkpoint, spread by default over
                # minutes: make it quick (the setting follows to the standby with the backup).
                pc_psql "$(pc_port "$name")" postgres >/dev/null <<'SQL'
ALTER SYSTEM SET checkpoint_completion_target = 0.01;
SELECT pg_reload_conf();
SQL
            fi
        done
        expected="$expected${expected:+ }$primary:primary $standby:secondary"
        pc_wait "a primary and a secondary in shard $shard" pc_states_are "$expected"
    done
    for name in "${PC_NODES[@]}"; do
        pc_as pg_autoctl config set --pgdata "$PC_BASE/$name" timeout.network_partition_timeout "$PC_PARTITION_TIMEOUT_S" >/dev/null
    done
    for ((shard = 0; shard < PC_SHARDS; shard++)); do
        pc_psql "$(pc_port "node$((2 * shard + 1))")" postgres -f "$ROOT/infra/postgres/exchange-role.sql" >/dev/null
    done
    log "PostgreSQL cluster ready: $(pc_states) (monitor 127.0.0.1:$PC_MONITOR_PORT, data $PC_BASE)"
}

pc_kill() { # name: SIGKILL its pg_autoctl and its Postgres, as if the machine were gone
    local pid postmaster=""
    pid="$(pc_pid "$1")" || return 0
    [ -f "$PC_BASE/$1/postmaster.pid" ] && postmaster="$(head -n 1 "$PC_BASE/$1/postmaster.pid")"
    kill -KILL -- "-$pid" 2>/dev/null || true
    # Postgres may run in a session of its own (pg_ctl starts it with setsid).
    [ -n "$postmaster" ] && kill -KILL "$postmaster" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null || { [ -n "$postmaster" ] && kill -0 "$postmaster" 2>/dev/null; }; do
        sleep 0.05
    done
    rm -f "$PC_BASE/$1.pid"
}

pc_stop() { # name: stop its pg_autoctl (which stops its Postgres), or kill it after 60 s
    local pid i
    pid="$(pc_pid "$1")" || return 0
    log "stopping PostgreSQL $1 (pg_autoctl pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    pc_kill "$1"
}

cluster_pg_stop() {
    pc_setup_paths soft || return 0
    local name
    for name in "${PC_NODES[@]}" monitor; do pc_stop "$name"; done
}

cluster_pg_node() { # kill|start|state [nodeN]
    pc_setup_paths
    local action="${1:-}" name="${2:-}"
    local usage="usage: $0 pg-node kill|start node1..node${#PC_NODES[@]} | pg-node state"
    case "$action" in
    kill)
        pc_is_node "$name" || die "$usage"
        pc_pid "$name" >/dev/null || die "$name is not running"
        pc_kill "$name"
        log "PostgreSQL $name killed"
        ;;
    start)
        pc_is_node "$name" || die "$usage"
        ! pc_pid "$name" >/dev/null || die "$name is running"
        pc_launch "$name" pg_autoctl run
        ;;
    state) pc_states ;;
    *) die "$usage" ;;
    esac
}

# Every member's name and ports, for the test that keeps docker-compose.yml in step.
cluster_layout() {
    local n name
    for n in "${CK_NODES[@]}"; do echo "kafka-$n $(ck_port "$n") $(ck_controller_port "$n")"; done
    for name in monitor "${PC_NODES[@]}"; do echo "postgres-$name $(pc_port "$name")"; done
    local shard
    for ((shard = 0; shard < PC_SHARDS; shard++)); do
        echo "formation-$(pc_formation "$shard") node$((2 * shard + 1)) node$((2 * shard + 2))"
    done
    echo "network_partition_timeout $PC_PARTITION_TIMEOUT_S"
}

cluster_running() { # kafka|postgres
    case "$1" in
    kafka)
        local n
        for n in "${CK_NODES[@]}"; do ck_pid "$n" >/dev/null || return 1; done
        ;;
    postgres)
        pc_setup_paths soft && pc_all_running
        ;;
    esac
}

cluster_write_env() {
    local tmp="$ENV_FILE.tmp.$$"
    {
        echo "# Written by CX_SERVICES_MODE=cluster infra/services.sh: the local cluster. Source it."
        if cluster_running kafka; then
            echo "export KAFKA_BOOTSTRAP_SERVERS=$(ck_bootstrap)"
            echo "export CX_KAFKA_REPLICATION_FACTOR=3"
            echo "export CX_KAFKA_MIN_INSYNC_REPLICAS=2"
        fi
        if cluster_running postgres; then
            echo "export DATABASE_URL='$(pc_url 0)'"
            echo "export CX_SETTLEMENT_SHARDS='$(pc_shard_urls)'"
        fi
        # So that `infra/services.sh kafka-node|pg-node` finds this cluster's members.
        echo "export CX_SERVICES_MODE=cluster"
        echo "export CX_CLUSTER_KAFKA_PORT=$CK_BASE_PORT"
        echo "export CX_CLUSTER_PG_PORT=$PC_BASE_PORT"
        echo "export CX_CLUSTER_SETTLEMENT_SHARDS=$PC_SHARDS"
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

cluster_status() {
    local rc=0 n pid
    for n in "${CK_NODES[@]}"; do
        if pid="$(ck_pid "$n")"; then echo "kafka-$n:  running (pid $pid) on 127.0.0.1:$(ck_port "$n")"; else echo "kafka-$n:  stopped"; rc=1; fi
    done
    if cluster_running postgres; then echo "postgres: $(pc_states) (monitor 127.0.0.1:$PC_MONITOR_PORT)"; else echo "postgres: stopped"; rc=1; fi
    [ -f "$ENV_FILE" ] && { echo "--- $ENV_FILE"; grep '^export' "$ENV_FILE" || true; }
    return $rc
}
