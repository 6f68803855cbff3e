# The two commands of the README. Both run the idempotent set-up first.
.PHONY: setup quickstart test test-fast experiments-quick

setup:
	bash scripts/setup.sh

quickstart: setup
	.venv/bin/lugha quickstart

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"

# The README's research questions on the demo with the small budget (--quick), output in ./lugha-experiments.
# Builds the demo data into datasets/demo when it is not there (the quickstart keeps its own copy in
# lugha-quickstart/data); needs the model's weights (`lugha weights e5-small`, which make quickstart runs).
experiments-quick: setup
	test -f datasets/demo/manifest.jsonl || .venv/bin/lugha data demo --out datasets/demo
	.venv/bin/lugha experiments baselines --data datasets/demo/manifest.jsonl --quick
	.venv/bin/lugha experiments transfer --data datasets/demo/manifest.jsonl --quick
	.venv/bin/lugha experiments forgetting --data datasets/demo/manifest.jsonl --quick

# ARM (aarch64) without hardware: qemu-user + an unpacked arm64 Debian python + aarch64 wheels.
# Parity only (emulation is ~240x slower). LUGHA_ARM_BUNDLE=path also runs device_tests on that bundle.
.PHONY: arm-env arm-test
arm-env:
	bash scripts/arm_env.sh

arm-test: setup arm-env
	.venv/bin/python -m pytest -q tests/test_arm_emulation.py
