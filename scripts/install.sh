#!/usr/bin/env bash
# Installs what this project needs on a Debian machine: system packages (MariaDB server,
# client and mariabackup, OpenSSH, zstd, the headers mysqlclient compiles against) and the
# Python environment in .venv. Idempotent: a second run changes nothing.
#
# Usage: scripts/install.sh [--dev]     (--dev adds the test and benchmark tools)
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly APT_PACKAGES=(mariadb-server mariadb-client mariadb-backup openssh-server openssh-client
  pkg-config libmariadb-dev gcc libc6-dev zstd gzip tar procps coreutils)
readonly PYTHON="${PYTHON:-python3}"

log() { printf '%s install: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

missing_packages() {
  local pkg
  local -a wanted=("${APT_PACKAGES[@]}")
  # a Debian system python3 needs its venv module and headers (mysqlclient compiles from source)
  if ! "${PYTHON}" -c 'import venv, ensurepip' >/dev/null 2>&1; then wanted+=(python3-venv); fi
  if ! "${PYTHON}" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; then
    wanted+=(python3-dev)
  fi
  for pkg in "${wanted[@]}"; do
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed"; then
      printf '%s\n' "${pkg}"
    fi
  done
}

install_system() {
  local -a missing
  mapfile -t missing < <(missing_packages)
  if (( ${#missing[@]} == 0 )); then
    log "system packages present"
    return
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "missing Debian packages: ${missing[*]}"
    log "run as root, or: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    exit 3
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pip, without the warning it prints per package for each missing find-links folder of the
# machine's pip.conf (hundreds of lines that bury the real output)
pip_quiet() {
  "${ROOT}/.venv/bin/pip" -q --disable-pip-version-check "$@" 2>&1 \
    | sed -e "/^WARNING: Location 'file:.*' is ignored: it is neither a file nor a directory\.$/d" >&2
}

install_python() {
  local reqs="requirements.txt" stamp
  [[ "${1:-}" == "--dev" ]] && reqs="requirements-dev.txt"
  if [[ ! -x "${ROOT}/.venv/bin/python" ]]; then
    log "creating .venv with ${PYTHON}"
    "${PYTHON}" -m venv "${ROOT}/.venv"
  fi
  stamp="$(cat "${ROOT}/requirements.txt" "${ROOT}/requirements-dev.txt" "${ROOT}/constraints.txt" | sha256sum | cut -c1-16)-${reqs}"
  if [[ -f "${ROOT}/.venv/.installed" ]] && grep -qx -- "${stamp}" "${ROOT}/.venv/.installed"; then
    log "python packages present (${reqs})"
    return
  fi
  log "installing python packages from ${reqs} (pinned by constraints.txt)"
  pip_quiet install --upgrade pip wheel
  pip_quiet install -r "${ROOT}/${reqs}" -c "${ROOT}/constraints.txt"
  printf '%s\n' "${stamp}" >> "${ROOT}/.venv/.installed"
}

main() {
  install_system
  install_python "$@"
}

main "$@"
