#!/usr/bin/env bash
# Set up Tunesmith with its test tools (first run only) and run the tests.
#
#   ./test.sh                                  # the whole suite (what CI runs)
#   ./test.sh -m "not slow and not browser"    # any pytest options: the quick loop
#
# Browser tests drive real Chromium at /usr/bin/chromium (skipped, with the reason, when it is missing:
# sudo apt-get install chromium). GGUF tests need llama.cpp support: CI installs it here (pip caches the
# built wheel); elsewhere they are skipped until `tunesmith setup gguf` (or TUNESMITH_TEST_GGUF=1 ./test.sh).
set -euo pipefail
cd "$(dirname "$0")"
bash install.sh --test
VENV="${VIRTUAL_ENV:-$PWD/.venv}"
if [ -n "${CI:-}" ] || [ "${TUNESMITH_TEST_GGUF:-0}" = 1 ]; then
  echo
  echo "==> llama.cpp support for the GGUF tests"
  "$VENV/bin/tunesmith" setup gguf
fi
echo
echo "==> Running the tests"
exec "$VENV/bin/pytest" "$@"
