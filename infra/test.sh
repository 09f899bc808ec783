#!/usr/bin/env bash
# Installs everything, lints, type-checks, and runs the whole test suite (this is what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy model pipelines
.venv/bin/python -m pytest -q "$@"
