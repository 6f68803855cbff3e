#!/usr/bin/env bash
# onnxruntime-web for the field app's on-phone mode (`lugha serve`), pinned, from the npm registry.
# Copies only what the page loads: the WebAssembly-only ES module build, its Emscripten glue and the
# SIMD .wasm (~14 MB, so it is built here at set-up rather than committed), plus its licence notice
# (the npm tarball ships no LICENSE file; package.json says MIT, Copyright (c) Microsoft Corporation).
# Idempotent: does nothing when runtimes/static/vendor already holds this version.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ORT_WEB_VERSION=${ORT_WEB_VERSION:-1.30.0}
PREFIX="$REPO/.cache/web"
DEST="$REPO/runtimes/static/vendor"
FILES=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm)

say() { printf '\033[1m[vendor-web]\033[0m %s\n' "$*"; }

have_all() {
  [ "$(cat "$DEST/.version" 2>/dev/null)" = "$ORT_WEB_VERSION" ] || return 1
  for f in "${FILES[@]}" onnxruntime-web.LICENSE.txt; do [ -s "$DEST/$f" ] || return 1; done
}

if have_all; then
  say "onnxruntime-web@$ORT_WEB_VERSION is in runtimes/static/vendor"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { say "npm is needed (apt-get install npm)"; exit 1; }
mkdir -p "$PREFIX" "$DEST"
tarball="$PREFIX/onnxruntime-web-$ORT_WEB_VERSION.tgz"
if [ ! -s "$tarball" ]; then
  say "npm pack onnxruntime-web@$ORT_WEB_VERSION"
  # npm pack fetches the one tarball (no dependencies, no install scripts): the dist builds are self-contained.
  (cd "$PREFIX" && npm pack --silent --pack-destination "$PREFIX" "onnxruntime-web@$ORT_WEB_VERSION" >/dev/null)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
members=("${FILES[@]/#/package/dist/}")
tar -xzf "$tarball" -C "$work" "${members[@]}" package/package.json
got=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$work/package/package.json" | head -n1)
[ "$got" = "$ORT_WEB_VERSION" ] || { say "tarball holds version $got, expected $ORT_WEB_VERSION"; exit 1; }
for f in "${FILES[@]}"; do cp "$work/package/dist/$f" "$DEST/$f"; done
license=$(sed -n 's/^ *"license": *"\([^"]*\)".*/\1/p' "$work/package/package.json" | head -n1)
[ "$license" = "MIT" ] || { say "onnxruntime-web@$ORT_WEB_VERSION is licensed $license, not MIT: check before vendoring"; exit 1; }
cat > "$DEST/onnxruntime-web.LICENSE.txt" <<LICENSE
onnxruntime-web $ORT_WEB_VERSION (npm), files: ${FILES[*]}
MIT License

Copyright (c) Microsoft Corporation

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial
portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE
USE OR OTHER DEALINGS IN THE SOFTWARE.
LICENSE
echo "$ORT_WEB_VERSION" > "$DEST/.version"
say "vendored onnxruntime-web@$ORT_WEB_VERSION: $(du -sh "$DEST" | cut -f1) in runtimes/static/vendor"
