#!/usr/bin/env bash
# The real local stack, on 127.0.0.1 only: Prefect server + process worker, MLflow tracking
# server with an artifact store, Dask scheduler + workers, the model service (follows
# @champion of the stack's registry; answers 503 on /ready until there is one).
#
#   infra/stack.sh up      start everything, wait until healthy, write the settings profile
#   infra/stack.sh down    stop exactly the processes `up` started (pid files), nothing else
#   infra/stack.sh status  which of them are alive
#
# Each process runs in its own session, so `down` stops it and its children (uvicorn,
# gunicorn, worker subprocesses) by process group. Point nightshift at the stack with
#   export NIGHTSHIFT_PROFILE=$NIGHTSHIFT_STACK_DIR/nightshift.env
# Knobs (environment): NIGHTSHIFT_STACK_DIR (.nightshift/stack), NIGHTSHIFT_STACK_PREFECT_PORT
# (4200), NIGHTSHIFT_STACK_MLFLOW_PORT (5000), NIGHTSHIFT_STACK_DASK_PORT (8786),
# NIGHTSHIFT_STACK_MODEL_PORT (8080),
# NIGHTSHIFT_STACK_DASK_WORKERS (2), NIGHTSHIFT_STACK_DEPLOY (1: run `nightshift deploy`),
# NIGHTSHIFT_WORK_POOL (nightshift-process), NIGHTSHIFT_HOME (.nightshift), and
# PREFECT_SERVER_DATABASE_CONNECTION_URL (postgresql+asyncpg://... instead of SQLite).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${NIGHTSHIFT_BIN:-$ROOT/.venv/bin}"
STACK_DIR="$(mkdir -p "${NIGHTSHIFT_STACK_DIR:-$ROOT/.nightshift/stack}" && cd "${NIGHTSHIFT_STACK_DIR:-$ROOT/.nightshift/stack}" && pwd)"
HOME_DIR="${NIGHTSHIFT_HOME:-$ROOT/.nightshift}"
PREFECT_PORT="${NIGHTSHIFT_STACK_PREFECT_PORT:-4200}"
MLFLOW_PORT="${NIGHTSHIFT_STACK_MLFLOW_PORT:-5000}"
DASK_PORT="${NIGHTSHIFT_STACK_DASK_PORT:-8786}"
DASK_WORKERS="${NIGHTSHIFT_STACK_DASK_WORKERS:-2}"
MODEL_PORT="${NIGHTSHIFT_STACK_MODEL_PORT:-8080}"
POOL="${NIGHTSHIFT_WORK_POOL:-nightshift-process}"
HOST=127.0.0.1
PREFECT_API="http://$HOST:$PREFECT_PORT/api"
MLFLOW_URI="http://$HOST:$MLFLOW_PORT"
DASK_ADDRESS="tcp://$HOST:$DASK_PORT"
SERVICES=(prefect-server mlflow-server dask-scheduler dask-workers prefect-worker model-service)

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

alive() { [[ -f "$STACK_DIR/$1.pid" ]] && kill -0 "$(cat "$STACK_DIR/$1.pid")" 2>/dev/null; }

start() {  # start NAME CMD...: own session, log and pid file under $STACK_DIR
    local name=$1
    shift
    if alive "$name"; then
        echo "$name already running (pid $(cat "$STACK_DIR/$name.pid"))"
        return
    fi
    setsid "$@" >"$STACK_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$STACK_DIR/$name.pid"
    echo "started $name (pid $!, log $STACK_DIR/$name.log)"
}

wait_http() {  # wait_http NAME URL SECONDS
    local deadline=$((SECONDS + $3))
    until curl -fsS -o /dev/null "$2" 2>/dev/null; do
        if ! alive "$1"; then
            echo "$1 exited; last lines of $STACK_DIR/$1.log:" >&2
            tail -n 20 "$STACK_DIR/$1.log" >&2
            return 1
        fi
        if ((SECONDS > deadline)); then
            echo "$1 not healthy at $2 after $3 s; see $STACK_DIR/$1.log" >&2
            return 1
        fi
        sleep 1
    done
}

wait_port() {  # wait_port NAME PORT SECONDS
    local deadline=$((SECONDS + $3))
    until port_in_use "$2"; do
        alive "$1" || { echo "$1 exited; see $STACK_DIR/$1.log" >&2; return 1; }
        ((SECONDS <= deadline)) || { echo "$1 not listening on $2 after $3 s" >&2; return 1; }
        sleep 1
    done
}

up() {
    local name port
    for name in prefect-server:$PREFECT_PORT mlflow-server:$MLFLOW_PORT dask-scheduler:$DASK_PORT \
        model-service:$MODEL_PORT; do
        port=${name#*:}
        if ! alive "${name%%:*}" && port_in_use "$port"; then
            echo "port $port on $HOST is taken by another process; set NIGHTSHIFT_STACK_*_PORT" >&2
            exit 1
        fi
    done
    mkdir -p "$STACK_DIR/prefect" "$STACK_DIR/mlflow/artifacts" "$HOME_DIR"
    # The settings profile every stack process (and the user) reads.
    cat >"$STACK_DIR/nightshift.env" <<PROFILE
NIGHTSHIFT_HOME=$HOME_DIR
NIGHTSHIFT_PREFECT_API_URL=$PREFECT_API
NIGHTSHIFT_MLFLOW_TRACKING_URI=$MLFLOW_URI
NIGHTSHIFT_DASK_ADDRESS=$DASK_ADDRESS
NIGHTSHIFT_WORK_POOL=$POOL
PROFILE
    export NIGHTSHIFT_PROFILE="$STACK_DIR/nightshift.env"
    export PREFECT_API_URL="$PREFECT_API"
    export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_ENABLE_TELEMETRY=false
    export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-INFO}"

    PREFECT_HOME="$STACK_DIR/prefect" PREFECT_UI_API_URL="$PREFECT_API" \
        start prefect-server "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
    start mlflow-server "$BIN/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
        --backend-store-uri "sqlite:///$STACK_DIR/mlflow/mlflow.db" \
        --artifacts-destination "$STACK_DIR/mlflow/artifacts"
    start dask-scheduler "$BIN/dask" scheduler --host "$HOST" --port "$DASK_PORT" \
        --dashboard-address "$HOST:0"
    wait_port dask-scheduler "$DASK_PORT" 60
    # Workers report task runs to the Prefect server (PREFECT_API_URL exported above);
    # without it each would start an ephemeral server of its own.
    start dask-workers "$BIN/dask" worker "$DASK_ADDRESS" --host "$HOST" \
        --nworkers "$DASK_WORKERS" --nthreads 1 --no-dashboard
    wait_http prefect-server "$PREFECT_API/health" 180
    wait_http mlflow-server "$MLFLOW_URI/health" 180
    start prefect-worker "$BIN/prefect" worker start --pool "$POOL" --type process
    start model-service "$BIN/nightshift" serve-model --host "$HOST" --port "$MODEL_PORT"
    wait_http model-service "http://$HOST:$MODEL_PORT/health" 120
    if [[ "${NIGHTSHIFT_STACK_DEPLOY:-1}" == 1 ]]; then
        (cd "$ROOT" && "$BIN/nightshift" deploy --pool "$POOL")
    fi
    cat <<DONE

stack up. Prefect UI $PREFECT_API (UI at http://$HOST:$PREFECT_PORT), MLflow $MLFLOW_URI,
Dask $DASK_ADDRESS, work pool $POOL, model service http://$HOST:$MODEL_PORT (@champion).
Point nightshift at it:
  export NIGHTSHIFT_PROFILE=$STACK_DIR/nightshift.env
DONE
}

down() {
    local name pid
    for name in $(printf '%s\n' "${SERVICES[@]}" | tac); do
        [[ -f "$STACK_DIR/$name.pid" ]] || continue
        pid=$(cat "$STACK_DIR/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            kill -KILL -- "-$pid" 2>/dev/null || true
            echo "stopped $name (pid $pid)"
        fi
        rm -f "$STACK_DIR/$name.pid"
    done
}

status() {
    local name
    for name in "${SERVICES[@]}"; do
        if alive "$name"; then echo "$name: running (pid $(cat "$STACK_DIR/$name.pid"))"; else echo "$name: stopped"; fi
    done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
