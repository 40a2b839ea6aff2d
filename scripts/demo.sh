#!/usr/bin/env bash
# Runs the main job on the embedded sandbox: a MariaDB source, its GTID replica and an sshd on
# loopback (the database host and the backup storage host), a CMDB describing them, Airflow 3
# standalone (SQLite, LocalExecutor, 127.0.0.1) with this project's DAGs, and one run of the
# sandbox instance's backup DAG. Prints the UI address, the login, where the backup landed and
# how to stop it all. Idempotent: a second run reuses what is up.
#
# Usage: scripts/demo.sh [up|stop|status]     (default: up)
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly STATE="${ROOT}/.sandbox"
readonly DAG_ID="mysql_backup__sandbox"
export AIRFLOW_HOME="${ROOT}/.airflow"

log() { printf '%s demo: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

free_port() { "${ROOT}/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

airflow_env() {
  local port
  mkdir -p "${AIRFLOW_HOME}"
  if [[ -f "${AIRFLOW_HOME}/api_port" ]]; then port="$(cat "${AIRFLOW_HOME}/api_port")"; else
    port="$(free_port)"; echo "${port}" > "${AIRFLOW_HOME}/api_port"; fi
  export PATH="${ROOT}/.venv/bin:${PATH}"
  export AIRFLOW__CORE__DAGS_FOLDER="${ROOT}/dags"
  export AIRFLOW__CORE__PLUGINS_FOLDER="${ROOT}/plugins"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
  export AIRFLOW__API__HOST=127.0.0.1
  export AIRFLOW__API__PORT="${port}"
  export AIRFLOW__API__BASE_URL="http://127.0.0.1:${port}"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:${port}/execution/"
  # the log servers default to fixed ports (8793, 8794): give them free ones too
  [[ -f "${AIRFLOW_HOME}/log_ports" ]] || echo "$(free_port) $(free_port)" > "${AIRFLOW_HOME}/log_ports"
  read -r AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT < "${AIRFLOW_HOME}/log_ports"
  export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT
  export MYSQL_BACKUP_CMDB="${STATE}/cmdb.yaml"
  export MYSQL_BACKUP_HOME="${STATE}/var"
  export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
}

airflow_running() {
  [[ -f "${AIRFLOW_HOME}/standalone.pgid" ]] && kill -0 -- "-$(cat "${AIRFLOW_HOME}/standalone.pgid")" 2>/dev/null
}

stop_all() {
  if airflow_running; then
    log "stopping Airflow"
    kill -TERM -- "-$(cat "${AIRFLOW_HOME}/standalone.pgid")" 2>/dev/null || true
    for _ in $(seq 1 60); do airflow_running || break; sleep 0.5; done
    airflow_running && kill -KILL -- "-$(cat "${AIRFLOW_HOME}/standalone.pgid")" 2>/dev/null || true
  fi
  rm -f "${AIRFLOW_HOME}/standalone.pgid"
  "${ROOT}/.venv/bin/python" -m sandbox down --dir "${STATE}" 2>/dev/null || true
}

start_airflow() {
  if airflow_running; then log "Airflow already running"; return; fi
  log "preparing Airflow metadata (SQLite) in ${AIRFLOW_HOME}"
  airflow db migrate >"${AIRFLOW_HOME}/migrate.log" 2>&1 || die "airflow db migrate failed: see ${AIRFLOW_HOME}/migrate.log"
  "${ROOT}/.venv/bin/python" -m sandbox connections --dir "${STATE}" --out "${AIRFLOW_HOME}/connections.json"
  airflow connections import --overwrite "${AIRFLOW_HOME}/connections.json" >/dev/null
  rm -f "${AIRFLOW_HOME}/connections.json"
  (cd "${ROOT}/plugins" && "${ROOT}/.venv/bin/python" -m mysqlbackup pools) > "${AIRFLOW_HOME}/pools.json"
  airflow pools import "${AIRFLOW_HOME}/pools.json" >/dev/null
  log "starting airflow standalone on ${AIRFLOW__API__BASE_URL}"
  setsid airflow standalone >"${AIRFLOW_HOME}/standalone.log" 2>&1 < /dev/null &
  echo $! > "${AIRFLOW_HOME}/standalone.pgid"
  for _ in $(seq 1 240); do
    if "${ROOT}/.venv/bin/python" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' \
      "${AIRFLOW__API__BASE_URL}/api/v2/monitor/health" >/dev/null 2>&1; then return; fi
    airflow_running || die "airflow standalone exited: see ${AIRFLOW_HOME}/standalone.log"
    sleep 1
  done
  die "Airflow did not become healthy in 240 s: see ${AIRFLOW_HOME}/standalone.log"
}

run_dag() {
  local run_id state="" i
  for i in $(seq 1 120); do
    airflow dags list -o plain 2>/dev/null | grep -q "${DAG_ID}" && break
    sleep 2
  done
  airflow dags unpause "${DAG_ID}" >/dev/null 2>&1 || true
  run_id="demo__$(date -u +%Y%m%dT%H%M%S)"
  log "triggering ${DAG_ID} (run ${run_id})"
  airflow dags trigger "${DAG_ID}" --run-id "${run_id}" >/dev/null
  for i in $(seq 1 360); do
    state="$(airflow dags state "${DAG_ID}" "${run_id}" 2>/dev/null | tail -n 1 || true)"
    case "${state}" in
      success|failed) break ;;
    esac
    sleep 5
  done
  log "run ${run_id}: ${state}"
  [[ "${state}" == "success" ]]
}

print_summary() {
  local pw_file="${AIRFLOW_HOME}/simple_auth_manager_passwords.json.generated"
  echo
  echo "Airflow UI:    ${AIRFLOW__API__BASE_URL}"
  if [[ -f "${pw_file}" ]]; then
    echo "Login:         $("${ROOT}/.venv/bin/python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(", ".join(f"{u} / {p}" for u,p in d.items()))' "${pw_file}")"
  fi
  echo "Backups:       $(cd "${ROOT}/plugins" && "${ROOT}/.venv/bin/python" -m mysqlbackup backups --instance sandbox | head -n 3)"
  echo "Storage dir:   ${STATE}/storage/sandbox/"
  echo "Catalog:       sqlite:///${STATE}/var/catalog.sqlite"
  echo "CMDB:          ${STATE}/cmdb.yaml"
  echo "Stop it all:   scripts/demo.sh stop"
}

main() {
  local action="${1:-up}"
  case "${action}" in
    up)
      bash "${ROOT}/scripts/install.sh"
      airflow_env
      "${ROOT}/.venv/bin/python" -m sandbox up --dir "${STATE}"
      start_airflow
      if run_dag; then print_summary; else
        print_summary; die "the backup DAG failed: open the UI, or see ${AIRFLOW_HOME}/logs"; fi
      ;;
    stop) airflow_env; stop_all; log "stopped" ;;
    status) airflow_env; "${ROOT}/.venv/bin/python" -m sandbox status --dir "${STATE}" || true
      if airflow_running; then echo "airflow: running on ${AIRFLOW__API__BASE_URL}"; else echo "airflow: stopped"; fi ;;
    *) die "unknown action ${action}: use up, stop or status" ;;
  esac
}

main "$@"
