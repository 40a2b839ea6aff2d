#!/usr/bin/env bash
# Runs the main job on the embedded sandbox: a MariaDB source (with a small sample database,
# `shop`), its GTID replica and an sshd on loopback (the database host and the backup storage
# host), a CMDB describing them, and Airflow 3 (api-server, scheduler, dag-processor, triggerer;
# SQLite, LocalExecutor, every listener on 127.0.0.1) with this project's DAGs. The first `up`
# runs the sandbox instance's backup DAG once, then makes a bad DELETE and runs the flashback DAG
# for it (review only). Prints the UI address, the login, the backups, and how to undo the DELETE.
#
# Idempotent: `up` again reuses what is up; `up` after `stop` restarts the servers and Airflow on
# their existing data (same ports when free). `reset` deletes the sandbox's state.
#
# Usage: scripts/demo.sh [up|stop|status|reset]     (default: up)
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly STATE="${ROOT}/.sandbox"
readonly DAG_ID="mysql_backup__sandbox"
readonly PY="${ROOT}/.venv/bin/python"
export AIRFLOW_HOME="${ROOT}/.airflow"
readonly PGID_FILE="${AIRFLOW_HOME}/airflow.pgid"

log() { printf '%s demo: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

sandbox() { "${PY}" -m sandbox "$@" --dir "${STATE}"; }

# the environment of everything the demo starts
demo_env() {
  export PATH="${ROOT}/.venv/bin:${PATH}"
  export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
  # every process the demo starts carries this mark (the sandbox's sshd passes it on to the
  # commands it runs): `stop` ends whatever still has it after stopping the process groups
  export MYSQL_BACKUP_SANDBOX="${STATE}"
  export AIRFLOW__CORE__DAGS_FOLDER="${ROOT}/dags"
  export AIRFLOW__CORE__PLUGINS_FOLDER="${ROOT}/plugins"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  # LocalExecutor starts this many workers at once (the default, 32, is far too many here)
  export AIRFLOW__CORE__PARALLELISM=4
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
  export AIRFLOW__API__HOST=127.0.0.1
  # disabled by default; loopback should anyone turn it on
  export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1
  export MYSQL_BACKUP_CMDB="${STATE}/cmdb.yaml"
  export MYSQL_BACKUP_HOME="${STATE}/var"
  local port=""
  [[ -f "${AIRFLOW_HOME}/api_port" ]] && port="$(cat "${AIRFLOW_HOME}/api_port")"
  api_port_env "${port}"
}

api_port_env() {
  export AIRFLOW__API__PORT="$1"
  export AIRFLOW__API__BASE_URL="http://127.0.0.1:$1"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$1/execution/"
}

free_port() { "${PY}" -c 'from sandbox.servers import free_port; print(free_port())'; }
port_free() { "${PY}" -c 'import sys; from sandbox.servers import port_free; sys.exit(not port_free(int(sys.argv[1])))' "$1"; }

# the API port: the one used before when it is still free, else a new free one
choose_api_port() {
  local port="${AIRFLOW__API__PORT}"
  if [[ -z "${port}" ]] || ! port_free "${port}"; then
    [[ -n "${port}" ]] && log "Airflow's port ${port} is taken now: moving to a free one"
    port="$(free_port)"
  fi
  mkdir -p "${AIRFLOW_HOME}"
  echo "${port}" > "${AIRFLOW_HOME}/api_port"
  api_port_env "${port}"
}

# whether a process group has a live (not zombie) process
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

airflow_running() {
  [[ -f "${PGID_FILE}" ]] && group_alive "$(cat "${PGID_FILE}")"
}

stop_group() {
  local pgid="$1" target="$2"
  group_alive "${pgid}" || return 0
  log "stopping Airflow (process group ${pgid})"
  kill -TERM -- "${target}" 2>/dev/null || true
  for _ in $(seq 1 80); do group_alive "${pgid}" || return 0; sleep 0.5; done
  log "Airflow still running after 40 s: killing it"
  kill -KILL -- "-${pgid}" 2>/dev/null || true
}

stop_airflow() {
  # TERM to the supervisor only: it passes it on to the components, which stop their own
  # children (a TERM to the whole group also hits LocalExecutor's workers, and the scheduler then
  # waits for the ones that died forever)
  [[ -f "${PGID_FILE}" ]] && stop_group "$(cat "${PGID_FILE}")" "$(cat "${PGID_FILE}")"
  # what an older version of this script started (`airflow standalone`, stopped by its group)
  [[ -f "${AIRFLOW_HOME}/standalone.pgid" ]] && stop_group "$(cat "${AIRFLOW_HOME}/standalone.pgid")" "-$(cat "${AIRFLOW_HOME}/standalone.pgid")"
  rm -f "${PGID_FILE}" "${AIRFLOW_HOME}/standalone.pgid"
}

stop_all() {
  stop_airflow
  # stops the servers (their data stays) and ends anything else still carrying the demo's mark
  sandbox down || true
}

migrate_airflow() {
  local stamp
  stamp="$(cd "${ROOT}/.venv/lib" && ls -d python3*/site-packages/apache_airflow*.dist-info 2>/dev/null | sort | tr '\n' ' ')"
  if [[ -f "${AIRFLOW_HOME}/airflow.db" && -f "${AIRFLOW_HOME}/migrated" ]] \
      && [[ "$(cat "${AIRFLOW_HOME}/migrated")" == "${stamp}" ]]; then
    return
  fi
  log "preparing Airflow's metadata DB (SQLite) in ${AIRFLOW_HOME}"
  airflow db migrate >"${AIRFLOW_HOME}/migrate.log" 2>&1 || die "airflow db migrate failed: see ${AIRFLOW_HOME}/migrate.log"
  echo "${stamp}" > "${AIRFLOW_HOME}/migrated"
}

# The components in one process group (what `airflow standalone` runs, without its two log
# servers: those listen on every address, and the api-server reads the task logs from the local
# files anyway). When one component exits, the others are stopped too. A TERM stops the scheduler,
# the DAG processor and the triggerer first (the scheduler lets a running task finish: the task
# reports to the api-server), then the api-server, after at most 25 s.
readonly SUPERVISOR='
  cd "${AIRFLOW_HOME}"
  : > components
  start() { local name="$1"; shift; "$@" >>"${AIRFLOW_HOME}/${name}.log" 2>&1 & echo "${name} $!" >> components; }
  shutdown() {
    trap "" TERM
    kill -TERM ${others} 2>/dev/null
    for _ in $(seq 1 50); do kill -0 ${others} 2>/dev/null || break; sleep 0.5; done
    kill -TERM ${api} 2>/dev/null
    wait
    exit 0
  }
  trap shutdown TERM
  start api-server airflow api-server --host 127.0.0.1 --port "${AIRFLOW__API__PORT}"; api=$!
  start scheduler airflow scheduler --skip-serve-logs; others=$!
  start dag-processor airflow dag-processor; others="${others} $!"
  start triggerer airflow triggerer --skip-serve-logs; others="${others} $!"
  wait -n -p gone || true
  echo "$(date -u +%FT%TZ) supervisor: $(grep -w "${gone:-?}" components || echo "pid ${gone:-?}") exited: stopping the others" >&2
  shutdown
'

start_airflow() {
  if airflow_running; then
    log "Airflow already running on ${AIRFLOW__API__BASE_URL}"
    return
  fi
  choose_api_port
  migrate_airflow
  log "starting Airflow (api-server, scheduler, dag-processor, triggerer) on ${AIRFLOW__API__BASE_URL}"
  setsid bash -c "${SUPERVISOR}" </dev/null >>"${AIRFLOW_HOME}/supervisor.log" 2>&1 &
  echo $! > "${PGID_FILE}"
  "${PY}" - <<'EOF' || die "Airflow did not start: see ${AIRFLOW_HOME}/api-server.log, scheduler.log, dag-processor.log, triggerer.log"
import os
from sandbox.airflow_api import Airflow
from sandbox.servers import _pid_alive
pgid = int(open(os.path.join(os.environ["AIRFLOW_HOME"], "airflow.pgid")).read())
Airflow(os.environ["AIRFLOW__API__BASE_URL"], os.environ["AIRFLOW_HOME"]).wait_healthy(240, lambda: _pid_alive(pgid))
EOF
}

# connections and pools: every time (the sandbox's ports may have moved since the last start)
setup_airflow() {
  (cd "${ROOT}/plugins" && "${PY}" -m mysqlbackup pools) > "${AIRFLOW_HOME}/pools.json"
  sandbox airflow-setup --pools "${AIRFLOW_HOME}/pools.json"
}

catalogued_backups() { (cd "${ROOT}/plugins" && "${PY}" -m mysqlbackup backups --instance sandbox); }

# once: the backup the bad DELETE comes after (later `up`s reuse it; trigger more in the UI)
run_backup() {
  if [[ -f "${STATE}/bad_delete.json" ]]; then
    log "the demo's backup ran already (see Backups below): trigger ${DAG_ID} in the UI for another"
    return
  fi
  local run_id
  run_id="demo__$(date -u +%Y%m%dT%H%M%S)"
  log "triggering ${DAG_ID} (run ${run_id})"
  if sandbox airflow-run "${DAG_ID}" --run-id "${run_id}" --timeout 1800 >/dev/null; then
    log "run ${run_id}: success"
  else
    print_summary
    die "the backup DAG failed (run ${run_id}): open the UI, or see ${AIRFLOW_HOME}/logs"
  fi
}

# once, after the bad DELETE: an incremental backup on the first one (a chain of two links; its
# verify prepares the full, then the incremental, as a restore would)
run_incremental() {
  [[ -f "${STATE}/incremental.json" ]] && return
  local run_id
  run_id="demo_incremental__$(date -u +%Y%m%dT%H%M%S)"
  log "triggering ${DAG_ID} with kind=incremental (run ${run_id})"
  if sandbox airflow-run "${DAG_ID}" --run-id "${run_id}" --conf '{"kind": "incremental"}' --timeout 1800 >/dev/null; then
    log "run ${run_id}: success"
    printf '{"run_id": "%s"}\n' "${run_id}" > "${STATE}/incremental.json"
  else
    print_summary
    die "the incremental backup failed (run ${run_id}): open the UI, or see ${AIRFLOW_HOME}/logs"
  fi
}

print_summary() {
  local pw_file="${AIRFLOW_HOME}/simple_auth_manager_passwords.json.generated" line label="Backups:"
  echo
  echo "Airflow UI:    ${AIRFLOW__API__BASE_URL}"
  if [[ -f "${pw_file}" ]]; then
    echo "Login:         $("${PY}" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(", ".join(f"{u} / {p}" for u,p in d.items()))' "${pw_file}")"
  fi
  local -a backups=()
  mapfile -t backups < <(catalogued_backups)
  for line in "${backups[@]:0:5}"; do
    printf '%-15s%s\n' "${label}" "${line}"; label=""
  done
  if (( ${#backups[@]} == 0 )); then echo "Backups:       none catalogued yet"
  elif (( ${#backups[@]} > 5 )); then echo "               ... and $(( ${#backups[@]} - 5 )) older (cd plugins && python -m mysqlbackup backups)"; fi
  echo "Storage dir:   ${STATE}/storage/sandbox/"
  echo "Catalog:       sqlite:///${STATE}/var/catalog.sqlite"
  echo "CMDB:          ${STATE}/cmdb.yaml"
  sandbox summary --root "${ROOT}" || true
  echo "Stop it all:   scripts/demo.sh stop     (keeps the data; scripts/demo.sh reset deletes it)"
}

main() {
  local action="${1:-up}"
  case "${action}" in
    up)
      bash "${ROOT}/scripts/install.sh"
      demo_env
      sandbox up
      start_airflow
      setup_airflow
      run_backup
      sandbox bad-delete
      run_incremental
      sandbox flashback || { print_summary; die "the flashback DAG failed: open the UI, or see ${AIRFLOW_HOME}/logs"; }
      sandbox restore || { print_summary; die "the restore DAG failed: open the UI, or see ${AIRFLOW_HOME}/logs"; }
      # the archive's supervisor runs every minute; one run now, so the summary shows the archive and the
      # point-in-time restore finds the bad DELETE's binlog catalogued
      sandbox airflow-run mysql_binlog__sandbox --run-id "demo_archive__$(date -u +%Y%m%dT%H%M%S)" --timeout 300 \
        >/dev/null || log "the binlog archive's supervisor run failed: see the mysql_binlog__sandbox DAG in the UI"
      sandbox pitr || { print_summary; die "the point-in-time restore DAG failed: open the UI, or see ${AIRFLOW_HOME}/logs"; }
      # one restore drill now (it runs daily): the sandbox is never drilled yet, so it is due
      if [ ! -e "${STATE}/drill.done" ]; then
        sandbox airflow-run mysql_restore_drill --run-id "demo_drill__$(date -u +%Y%m%dT%H%M%S)" --timeout 900 \
          >/dev/null && touch "${STATE}/drill.done" \
          || log "the restore drill failed: see the mysql_restore_drill DAG in the UI"
      fi
      print_summary
      ;;
    stop) demo_env; stop_all; log "stopped (the data stays; scripts/demo.sh reset deletes it)" ;;
    status)
      demo_env
      sandbox status || true
      if airflow_running; then
        echo "airflow: running on ${AIRFLOW__API__BASE_URL} (process group $(cat "${PGID_FILE}"))"
        [[ -f "${AIRFLOW_HOME}/components" ]] && while read -r name pid; do
          if kill -0 "${pid}" 2>/dev/null; then echo "  ${name}: pid ${pid}"; else echo "  ${name}: exited"; fi
        done < "${AIRFLOW_HOME}/components"
      else
        echo "airflow: stopped"
      fi ;;
    reset)
      demo_env
      stop_all
      sandbox reset
      if [[ -d "${AIRFLOW_HOME}" ]]; then
        echo "removing ${AIRFLOW_HOME}  (Airflow's metadata DB, config, logs, generated login)"
        rm -rf "${AIRFLOW_HOME}"
      fi
      log "reset: the next scripts/demo.sh starts from scratch" ;;
    *) die "unknown action ${action}: use up, stop, status or reset" ;;
  esac
}

main "$@"
