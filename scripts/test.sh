#!/usr/bin/env bash
# The README's test command: set up, then run the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/pytest -q -rs "$@"
