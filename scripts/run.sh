#!/usr/bin/env bash
# Set up and start the service on its embedded defaults: DICOM listener on port 11112 (AE title
# DEEPCOVID), SQLite job store, durable serverless broker, one worker process. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/deepcovid serve "$@"
