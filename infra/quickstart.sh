#!/usr/bin/env bash
# The quick start: installs everything, then runs the main job end to end on a generated sample
# (local Ray head + loopback S3-compatible server). `bash infra/quickstart.sh stop` stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "stop" ]; then exec .venv/bin/python -m infra.quickstart --stop; fi
bash infra/install.sh
exec .venv/bin/python -m infra.quickstart "$@"
