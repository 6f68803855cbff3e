#!/usr/bin/env bash
# The field app's on-phone mode (`lugha serve`), pinned, from the npm registry: onnxruntime-web (the
# WebAssembly-only ES module build, its Emscripten glue and the SIMD .wasm, ~14 MB, so built here at set-up
# rather than committed) and @huggingface/tokenizers (its one self-contained, dependency-free ES module
# build, which runs the bundle's tokenizer.json on the phone). `npm pack` fetches each package's one
# tarball (no dependencies, no install scripts); only the files the page loads are copied, plus each
# licence notice. Idempotent: does nothing when runtimes/static/vendor already holds these versions.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ORT_WEB_VERSION=${ORT_WEB_VERSION:-1.30.0}
TOKENIZERS_JS_VERSION=${TOKENIZERS_JS_VERSION:-0.2.0}
PREFIX="$REPO/.cache/web"
DEST="$REPO/runtimes/static/vendor"
ORT_FILES=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm)
TOK_FILES=(tokenizers.min.mjs)
STAMP="onnxruntime-web@$ORT_WEB_VERSION @huggingface/tokenizers@$TOKENIZERS_JS_VERSION"

say() { printf '\033[1m[vendor-web]\033[0m %s\n' "$*"; }

have_all() {
  [ "$(cat "$DEST/.version" 2>/dev/null)" = "$STAMP" ] || return 1
  for f in "${ORT_FILES[@]}" "${TOK_FILES[@]}" onnxruntime-web.LICENSE.txt tokenizers.LICENSE.txt; do
    [ -s "$DEST/$f" ] || return 1
  done
}

# unpack PACKAGE VERSION LICENSE DIR: npm pack (cached under .cache/web), extract package.json and the
# dist files named in FILES into DIR, check the version and the licence the vendoring below assumes.
unpack() {
  local pkg=$1 version=$2 want_license=$3 dir=$4 tarball got license
  tarball="$PREFIX/$(echo "${pkg#@}" | tr / -)-$version.tgz"
  if [ ! -s "$tarball" ]; then
    say "npm pack $pkg@$version"
    (cd "$PREFIX" && npm pack --silent --pack-destination "$PREFIX" "$pkg@$version" >/dev/null)
  fi
  mkdir -p "$dir"
  tar -xzf "$tarball" -C "$dir" "${FILES[@]/#/package/}" package/package.json
  got=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/package/package.json" | head -n1)
  [ "$got" = "$version" ] || { say "$pkg tarball holds version $got, expected $version"; exit 1; }
  license=$(sed -n 's/^ *"license": *"\([^"]*\)".*/\1/p' "$dir/package/package.json" | head -n1)
  [ "$license" = "$want_license" ] || { say "$pkg@$version is licensed $license, not $want_license: check before vendoring"; exit 1; }
}

if have_all; then
  say "$STAMP are in runtimes/static/vendor"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { say "npm is needed (apt-get install npm)"; exit 1; }
mkdir -p "$PREFIX" "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# onnxruntime-web: the npm tarball ships no LICENSE file; package.json says MIT, Copyright (c) Microsoft.
FILES=("${ORT_FILES[@]/#/dist/}")
unpack onnxruntime-web "$ORT_WEB_VERSION" MIT "$work/ort"
for f in "${ORT_FILES[@]}"; do cp "$work/ort/package/dist/$f" "$DEST/$f"; done
cat > "$DEST/onnxruntime-web.LICENSE.txt" <<LICENSE
onnxruntime-web $ORT_WEB_VERSION (npm), files: ${ORT_FILES[*]}
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

# @huggingface/tokenizers: Apache-2.0; its tarball ships the licence text, copied as it is.
FILES=("${TOK_FILES[@]/#/dist/}" LICENSE)
unpack @huggingface/tokenizers "$TOKENIZERS_JS_VERSION" Apache-2.0 "$work/tok"
for f in "${TOK_FILES[@]}"; do cp "$work/tok/package/dist/$f" "$DEST/$f"; done
{ echo "@huggingface/tokenizers $TOKENIZERS_JS_VERSION (npm), files: ${TOK_FILES[*]}"; echo
  cat "$work/tok/package/LICENSE"; } > "$DEST/tokenizers.LICENSE.txt"

echo "$STAMP" > "$DEST/.version"
say "vendored $STAMP: $(du -sh "$DEST" | cut -f1) in runtimes/static/vendor"
