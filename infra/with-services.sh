#!/usr/bin/env bash
# Run a command with local Kafka and PostgreSQL:
#   infra/with-services.sh .venv/bin/pytest -q
# starts them (infra/services.sh up: reuses running ones, skips those whose KAFKA_BOOTSTRAP_SERVERS
# or DATABASE_URL is already set), exports KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, runs the
# command, and on exit (also on failure or Ctrl-C) stops the services that this invocation
# started; services that were already running are left running. CX_KEEP_SERVICES=1 keeps all.
# CX_SERVICES_MODE=cluster: the same with the three Kafka nodes and the PostgreSQL primary,
# standby and monitor of services.sh's cluster mode (its environment: .cache/cluster.env).
# Exits with the command's exit code.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SERVICES="$HERE/services.sh"

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG]..." >&2
    exit 2
fi

started_file="$(mktemp "${TMPDIR:-/tmp}/cx-services.XXXXXX")"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${CX_KEEP_SERVICES:-0}" != 1 ]; then
        local names
        names="$(sort -u "$started_file" 2>/dev/null | tr '\n' ' ')"
        if [ -n "${names// /}" ]; then
            # shellcheck disable=SC2086  # a list of service names
            bash "$SERVICES" down $names || echo "[with-services] stopping the services failed" >&2
        fi
    fi
    rm -f "$started_file"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CX_SERVICES_STARTED_FILE="$started_file" bash "$SERVICES" up || {
    echo "[with-services] could not start the services" >&2
    exit 1
}
# shellcheck disable=SC1091
if [ "${CX_SERVICES_MODE:-single}" = cluster ]; then
    . "$ROOT/.cache/cluster.env"
else
    . "$ROOT/.cache/services.env"
fi

"$@"
