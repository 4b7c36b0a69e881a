#!/usr/bin/env bash
# Install everything the tests need (Debian packages, PyPI packages) and run the whole suite.
# Works on a fresh Debian machine with Python 3.11+, as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
python3 -m ruff check src tests bench
python3 -m mypy
# Two cores: one pytest worker per core; servers are started once per worker session.
python3 -m pytest -n "${PYTEST_WORKERS:-2}" -p no:cacheprovider "$@"
# Once more, a representative part, against the lowest dependency versions pyproject allows.
if [ $# -eq 0 ] && [ "${SKIP_LOWEST:-0}" != 1 ]; then
    bash scripts/test-lowest.sh
fi
