#!/usr/bin/env bash
# Installs what this project needs on a Debian machine: system packages (MariaDB server,
# client and mariabackup, OpenSSH, zstd, the headers mysqlclient compiles against; with --dev
# also chromium, which the browser tests drive) and the Python environment in .venv.
# Idempotent: a second run changes nothing, and a current .venv costs well under a second.
#
# Usage: scripts/install.sh [--dev]     (--dev adds the test and benchmark tools)
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly APT_PACKAGES=(mariadb-server mariadb-client mariadb-backup openssh-server openssh-client
  pkg-config libmariadb-dev gcc libc6-dev zstd gzip tar procps coreutils)
# --dev only: the UI tests drive this chromium through Playwright (`playwright install`, the
# browser download, is not used: the tests launch /usr/bin/chromium)
readonly DEV_APT_PACKAGES=(chromium)
readonly PYTHON="${PYTHON:-python3}"

log() { printf '%s install: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The Debian packages still to install, one a line ($1: --dev for the dev packages too).
missing_packages() {
  local pkg
  local -a wanted=("${APT_PACKAGES[@]}")
  local -A installed=()
  [[ "${1:-}" == "--dev" ]] && wanted+=("${DEV_APT_PACKAGES[@]}")
  # a Debian system python3 needs its venv module and headers (mysqlclient compiles from
  # source); one interpreter start for both checks (a pyenv shim costs about 0.1 s a start)
  mapfile -t -O "${#wanted[@]}" wanted < <("${PYTHON}" - <<'PY' 2>/dev/null || printf '%s\n' python3-venv python3-dev
import importlib.util, os, sysconfig
if not (importlib.util.find_spec("venv") and importlib.util.find_spec("ensurepip")):
    print("python3-venv")
if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
    print("python3-dev")
PY
)
  # one dpkg-query for all of them (it exits non-zero when one is unknown: that one is missing)
  while read -r pkg; do installed["${pkg}"]=1; done < <(
    dpkg-query -W -f='${Package} ${Status}\n' "${wanted[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}' || true)
  for pkg in "${wanted[@]}"; do
    [[ -n "${installed[${pkg}]:-}" ]] || printf '%s\n' "${pkg}"
  done
}

install_system() {
  local -a missing
  mapfile -t missing < <(missing_packages "$@")
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

# A short digest of files' contents.
digest() { cat "$@" | sha256sum | cut -c1-16; }

# .venv/.installed holds one stamp line per installed level: "plain <digest>" of the files a
# plain install reads (requirements.txt, constraints.txt), and after a --dev install also
# "dev <digest>" of those plus requirements-dev.txt. A dev install includes the plain one, so
# it writes both: a plain run after a dev run finds its stamp and installs nothing.
install_python() {
  local reqs="requirements.txt" stamp
  local -a stamps=("plain $(digest "${ROOT}/requirements.txt" "${ROOT}/constraints.txt")")
  if [[ "${1:-}" == "--dev" ]]; then
    reqs="requirements-dev.txt"
    stamps+=("dev $(digest "${ROOT}/requirements.txt" "${ROOT}/requirements-dev.txt" "${ROOT}/constraints.txt")")
  fi
  if [[ ! -x "${ROOT}/.venv/bin/python" ]]; then
    log "creating .venv with ${PYTHON}"
    "${PYTHON}" -m venv "${ROOT}/.venv"
  fi
  if [[ -f "${ROOT}/.venv/.installed" ]]; then
    local missing=0
    for stamp in "${stamps[@]}"; do
      grep -qxF -- "${stamp}" "${ROOT}/.venv/.installed" || missing=1
    done
    if (( missing == 0 )); then
      log "python packages present (${reqs})"
      return
    fi
  fi
  log "installing python packages from ${reqs} (pinned by constraints.txt)"
  pip_quiet install --upgrade pip wheel
  pip_quiet install -r "${ROOT}/${reqs}" -c "${ROOT}/constraints.txt"
  # replaced, not appended: a stamp of other file contents is stale (after a plain install an
  # older dev stamp cannot match either: its digest covers the plain files too)
  printf '%s\n' "${stamps[@]}" > "${ROOT}/.venv/.installed.tmp"
  mv -f "${ROOT}/.venv/.installed.tmp" "${ROOT}/.venv/.installed"
}

# The optional native row-image decoder (plugins/mysqlbackup/binlog/_rowimage.c, why in its
# header): compiled against the .venv's interpreter next to its source, rebuilt when the
# source or the interpreter changes (a stamp of both). Without it (no compiler, a failed
# build) flashback decodes in generated Python: the same output, 2-3x slower on wide rows.
build_native() {
  local src="${ROOT}/plugins/mysqlbackup/binlog/_rowimage.c" info so stamp
  info="$("${ROOT}/.venv/bin/python" -c 'import sysconfig, sys; print(sysconfig.get_paths()["include"]); print(sysconfig.get_config_var("EXT_SUFFIX")); print(sys.version)')"
  so="${src%.c}$(sed -n 2p <<<"${info}")"
  stamp="$( (cat "${src}"; printf '%s\n' "${info}") | sha256sum | cut -c1-16)"
  if [[ -f "${so}" && -f "${so}.stamp" && "$(cat "${so}.stamp")" == "${stamp}" ]]; then
    log "native row decoder present"
    return
  fi
  log "building the native row decoder ($(basename "${so}"))"
  if gcc -O2 -fPIC -shared -Wall -fno-strict-aliasing -I"$(sed -n 1p <<<"${info}")" \
      "${src}" -o "${so}.tmp" && mv -f "${so}.tmp" "${so}"; then
    printf '%s\n' "${stamp}" > "${so}.stamp"
  else
    rm -f "${so}.tmp"
    log "WARNING: the native row decoder did not build; flashback decodes in Python (same output, slower)"
  fi
}

# The project's Python byte-compiled ahead, as a package install does: a flashback (and the second
# process it spawns) imports about 40 modules, and compiling them from source takes 0.04 s of a
# 0.3-0.5 s run when bytecode is not written at import (PYTHONDONTWRITEBYTECODE, a read-only
# checkout). Stale files are rewritten; __pycache__ is gitignored.
compile_python() {
  "${ROOT}/.venv/bin/python" -m compileall -q -j 0 "${ROOT}/plugins" "${ROOT}/dags" >/dev/null \
    || log "WARNING: byte-compiling plugins/ and dags/ failed; imports compile from source (slower start)"
}

main() {
  install_system "$@"
  install_python "$@"
  build_native
  compile_python
}

main "$@"
