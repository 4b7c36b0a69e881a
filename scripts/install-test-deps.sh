#!/usr/bin/env bash
# Install everything cargohold's test suite needs on Debian 12 (bookworm).
#
#   scripts/install-test-deps.sh            # as root (or with sudo available)
#
# Idempotent and non-interactive (works in CI with no stdin):
#   * apt is skipped entirely when every required command is already present;
#   * then `python3 -m pip install -e '.[test]'` from the repository root.
# Environment:
#   PYTHON=python3.12      interpreter to install into (default: python3)
#   SKIP_APT=1             never touch apt (e.g. unprivileged CI with preinstalled tools)
#   PIP_ARGS="--user ..."  extra arguments for pip
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

APT_PACKAGES=(
    skopeo docker.io containerd podman docker-registry redis-server haproxy
    busybox-static wrk apache2-utils ca-certificates strace
    chromium  # the web UI's browser tests (Playwright drives /usr/bin/chromium)
    ceph-mon ceph-osd radosgw ceph-common  # a real S3 server: scripts/ceph-rgw.sh
)
# command (or file) -> what proves the package is installed
REQUIRED_COMMANDS=(
    skopeo dockerd docker containerd ctr podman docker-registry redis-server haproxy wrk ab strace
    ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph
)
REQUIRED_FILES=(/bin/busybox /etc/ssl/certs/ca-certificates.crt /usr/bin/chromium)

log() { printf '[install-test-deps] %s\n' "$*" >&2; }

missing_tools() {
    local missing=()
    for cmd in "${REQUIRED_COMMANDS[@]}"; do
        # dockerd/haproxy live in /usr/sbin, which may not be on a non-root PATH
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
    done
    for f in "${REQUIRED_FILES[@]}"; do
        [ -e "$f" ] || missing+=("$f")
    done
    printf '%s\n' "${missing[@]}"
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n env DEBIAN_FRONTEND=noninteractive "$@"
    else
        log "need root (or passwordless sudo) to run: $*"
        return 1
    fi
}

wait_for_dpkg_lock() {
    # another apt/dpkg run (unattended-upgrades, a parallel job) holds the lock: wait, bounded
    local waited=0
    while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock >/dev/null 2>&1; do
        if [ "$waited" -ge 600 ]; then
            log "dpkg is still locked after ${waited}s; giving up"
            return 1
        fi
        [ "$waited" -eq 0 ] && log "waiting for the dpkg lock..."
        sleep 5
        waited=$((waited + 5))
    done
}

install_apt_packages() {
    local missing
    missing="$(missing_tools)"
    if [ -z "$missing" ]; then
        log "all system tools present; skipping apt"
        return 0
    fi
    if [ "${SKIP_APT:-0}" = "1" ]; then
        log "SKIP_APT=1 but missing: $(echo "$missing" | tr '\n' ' ')"
        return 0
    fi
    log "missing: $(echo "$missing" | tr '\n' ' ')- installing with apt"
    command -v fuser >/dev/null 2>&1 && wait_for_dpkg_lock
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${APT_PACKAGES[@]}" </dev/null
    missing="$(missing_tools)"
    if [ -n "$missing" ]; then
        log "still missing after apt: $(echo "$missing" | tr '\n' ' ')"
        return 1
    fi
}

install_python_packages() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        log "$PYTHON must be Python 3.11 or newer"
        return 1
    fi
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        log "pip missing for $PYTHON; installing python3-pip"
        as_root apt-get update -q
        as_root apt-get install -y -q --no-install-recommends python3-pip </dev/null
    fi
    log "pip install -e '.[test]' in $REPO_ROOT"
    # Debian's system python is "externally managed" (PEP 668); a venv or pyenv python is not.
    local extra=()
    if "$PYTHON" -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) or sys.prefix != sys.base_prefix)'; then
        extra+=(--break-system-packages)
    fi
    (cd "$REPO_ROOT" && "$PYTHON" -m pip install -q --disable-pip-version-check \
        --no-input "${extra[@]}" ${PIP_ARGS:-} -e '.[test]' </dev/null)
}

install_apt_packages
install_python_packages
log "done"
