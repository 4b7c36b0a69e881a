#!/usr/bin/env bash
# Install cargohold and start it with the embedded default config (:5000, local storage).
# Extra arguments go to `cargohold serve`, e.g. `bash scripts/serve.sh --addr :5001`.
#
# A virtual environment in .venv is used when python3 can make one; otherwise (Debian without
# python3-venv) the package goes into the user's site, past Debian's PEP 668 guard.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if "$PYTHON" -m venv --help >/dev/null 2>&1 && { [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv 2>/dev/null; }; then
    .venv/bin/python -m pip install -q --disable-pip-version-check . </dev/null
    exec .venv/bin/python -m cargohold serve "$@"
fi
"$PYTHON" -m pip --version >/dev/null 2>&1 || {
    echo "pip is missing: apt-get install -y python3-pip (or python3-venv)" >&2
    exit 1
}
"$PYTHON" -m pip install -q --user --break-system-packages --disable-pip-version-check . </dev/null \
    || "$PYTHON" -m pip install -q --user --disable-pip-version-check . </dev/null
exec "$PYTHON" -m cargohold serve "$@"
