#!/usr/bin/env bash
# Static checks, as CI runs them: ruff (lint and format), the import contracts that keep the
# layers one way (import-linter, pyproject's [tool.importlinter]) and the type checker (mypy).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
.venv/bin/mypy
