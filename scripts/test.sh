#!/usr/bin/env bash
# Set up everything and run the whole test suite (what CI runs). Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not integration"` for the fast layer only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-services.sh
scripts/setup.sh
scripts/lint.sh
# The 25 slowest tests are listed at the end, so that a test growing slow is seen in CI's log.
exec .venv/bin/python -m pytest --durations=25 "$@"
