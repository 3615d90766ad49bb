.PHONY: run test test-fast bench lint

run:  ## set up and start the service on its embedded defaults
	scripts/run.sh

test:  ## set up and run the whole test suite (what CI runs)
	scripts/test.sh

test-fast:  ## unit tests only, no servers
	scripts/setup.sh && .venv/bin/python -m pytest -m "not integration"

bench:  ## benchmarks: print figures (not tests)
	scripts/setup.sh && for b in benchmarks/bench_*.py; do .venv/bin/python $$b || exit 1; done

lint:  ## ruff, import contracts (import-linter) and the type checker (mypy)
	scripts/setup.sh && scripts/lint.sh
