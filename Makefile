# The two commands of the README. Both run the idempotent set-up first.
.PHONY: setup quickstart test test-fast

setup:
	bash scripts/setup.sh

quickstart: setup
	.venv/bin/lugha quickstart

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"
