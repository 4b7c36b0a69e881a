#!/usr/bin/env bash
# Run a fast, representative part of the suite against the LOWEST dependency versions that
# pyproject.toml allows, so a '>=' bound that is too low fails here rather than at a user's
# import. A separate venv (.venv-lowest) gets every direct dependency pinned to its declared
# bound (scripts/lowest_constraints.py reads pyproject.toml each time: nothing to keep in sync);
# transitive dependencies resolve as pip chooses. scripts/test.sh runs this after the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${LOWEST_VENV:-.venv-lowest}"
log() { printf '[test-lowest] %s\n' "$*" >&2; }

if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    log "python venv support missing; installing python3-venv"
    SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv </dev/null
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$PYTHON" scripts/lowest_constraints.py test > "$constraints"
log "installing the lowest declared versions: $(tr '\n' ' ' < "$constraints")"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    --constraint "$constraints" -e '.[test]' </dev/null
# Prove the pins took: every pinned package is installed at exactly its lower bound.
"$VENV/bin/python" - "$constraints" <<'PY'
import sys
from importlib.metadata import version
from packaging.version import Version

for line in open(sys.argv[1]):
    name, _, wanted = line.strip().partition("==")
    got = version(name)
    if Version(got) != Version(wanted):
        sys.exit(f"[test-lowest] {name} is {got}, not its lower bound {wanted}")
PY
log "running the api, auth, config, storage and upload tests against them"
exec "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider \
    tests/api tests/auth tests/test_config.py tests/test_storage.py tests/test_catalog.py \
    tests/test_uploads.py tests/test_fuzz.py "$@"
