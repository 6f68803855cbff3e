#!/usr/bin/env bash
# The three sources of `lugha data demo`, fetched once so the build itself runs offline:
#   - the Noto Color Emoji font (Debian fonts-noto-color-emoji)      -> the images
#   - Unicode's emoji-test.txt (Debian unicode-data)                 -> groups / subgroups (labels)
#   - CLDR annotations (npm cldr-annotations-full, pinned version)   -> names and keywords per language
# Idempotent: each step checks first and does nothing when its source is already there.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CLDR_VERSION=48.2.0
NODE_PREFIX="$REPO/.cache/node"
CLDR_PKG="$NODE_PREFIX/node_modules/cldr-annotations-full/package.json"

say() { printf '\033[1m[demo-sources]\033[0m %s\n' "$*"; }

# 1. Debian packages, installed only if missing; `apt-get update` at most once, and only when needed.
missing=()
have_pkg() { [ -f "$2" ] || dpkg -s "$1" >/dev/null 2>&1; }  # the file itself counts (non-dpkg installs)
have_pkg fonts-noto-color-emoji /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf || missing+=(fonts-noto-color-emoji)
have_pkg unicode-data /usr/share/unicode/emoji/emoji-test.txt || missing+=(unicode-data)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "need root (or sudo) to apt-get install ${missing[*]}"; exit 1; }
    SUDO=sudo
  fi
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "fonts-noto-color-emoji, unicode-data and npm are installed"
fi

# 2. CLDR annotations into <repo>/.cache/node (git-ignored), where `lugha data demo` looks for them.
have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$CLDR_PKG" 2>/dev/null | head -n1 || true)
if [ "$have" = "$CLDR_VERSION" ]; then
  say "cldr-annotations-full@$CLDR_VERSION is in $NODE_PREFIX"
else
  say "npm install cldr-annotations-full@$CLDR_VERSION into $NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  # --ignore-scripts: data only; as root this also avoids npm's unsafe-perm dance.
  npm install --prefix "$NODE_PREFIX" --save-exact --no-audit --no-fund --ignore-scripts --loglevel=error \
    "cldr-annotations-full@$CLDR_VERSION"
fi
# 3. CLDR emoji group names per language (cldr-misc-full): the test that checks data/group_names.py
#    against the source reads them (the demo itself uses the table in the package).
MISC_PKG="$NODE_PREFIX/node_modules/cldr-misc-full/package.json"
have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$MISC_PKG" 2>/dev/null | head -n1 || true)
if [ "$have" != "$CLDR_VERSION" ]; then
  say "npm install cldr-misc-full@$CLDR_VERSION into $NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --save-exact --no-audit --no-fund --ignore-scripts --loglevel=error \
    "cldr-annotations-full@$CLDR_VERSION" "cldr-misc-full@$CLDR_VERSION"
fi
say "ready: lugha data demo --out datasets/demo"
