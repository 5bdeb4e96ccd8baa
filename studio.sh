#!/usr/bin/env bash
# Set up Tunesmith (first run only) and start the studio at http://127.0.0.1:7860.
#
#   ./studio.sh                       # first run: creates .venv and installs (a few minutes); later runs start at once
#   ./studio.sh --port 8000           # any `tunesmith webui` option: --host, --port, --auth user:password
#
# install.sh says what it installs and how long each step usually takes.
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh
VENV="${VIRTUAL_ENV:-$PWD/.venv}"
echo
echo "==> Starting the studio (Ctrl+C stops it; runs keep training in the background)"
exec "$VENV/bin/tunesmith" webui "$@"
