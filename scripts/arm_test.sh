#!/usr/bin/env bash
# Run the emulated Raspberry Pi's python3.11 (built by scripts/arm_env.sh) with lugha importable.
# Everything after `--` goes to python. Parity only: emulation is ~100-250x slower than the chip, so a
# latency measured here means nothing.
#
#   scripts/arm_test.sh --cpu cortex-a72 -- -c "import lugha.runtimes, onnxruntime, ai_edge_litert"
#   scripts/arm_test.sh --cpu cortex-a76 -- -m pytest device_tests --bundle bundles/lite0-e5 -q
#   scripts/arm_test.sh --cpu cortex-a72 -- -m lugha.cli doctor --json
#   scripts/arm_test.sh --cpu cortex-a72 --tflite -- -m pytest device_tests --bundle B --backends tflite
#
# --cpu cortex-a72 (Pi 4, NEON) | cortex-a76 (Pi 5, + dotprod/fp16); --dir the env folder (default
# $ARM_DIR or .cache/arm64); --tflite puts tflite-runtime and numpy<2 first on the path (a Pi with
# lugha[tflite]). ARM_QEMU overrides the emulator binary (default qemu-aarch64-static).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CPU=cortex-a72
DIR=${ARM_DIR:-.cache/arm64}
SITES=/opt/lugha/site
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) CPU=$2; shift 2 ;;
    --cpu=*) CPU=${1#--cpu=}; shift ;;
    --dir) DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#--dir=}; shift ;;
    --tflite) SITES=/opt/lugha/site-tflite:$SITES; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "arm_test.sh: unknown option $1 (python arguments go after --)" >&2; exit 2 ;;
  esac
done
ROOT=$DIR/roots/$CPU
if [ ! -x "$DIR/sysroot/usr/bin/python3.11" ] || [ ! -f "$ROOT/proc/cpuinfo" ]; then
  echo "arm_test.sh: no emulated env for $CPU in $DIR: run scripts/arm_env.sh ${DIR} first" \
       "(known CPUs: $(ls "$DIR/roots" 2>/dev/null | tr '\n' ' '))" >&2
  exit 2
fi
ROOT=$(cd "$ROOT" && pwd)
QEMU=$(command -v "${ARM_QEMU:-qemu-aarch64-static}") || { echo "arm_test.sh: no ${ARM_QEMU:-qemu-aarch64-static}: run scripts/arm_env.sh" >&2; exit 2; }

# lugha as the wheel lays it out, without installing: kit/ is `lugha`, each other floor (data/, runtimes/,
# training/, export/, cli/) its subpackage. The wheel holds them all; a Pi lacks only their heavy extras.
# A folder of links (made fresh each run, so new modules appear; links only added, so parallel runs of
# both CPUs do not race). The guest sees it as /opt/lugha/lib.
PKG=$ROOT/opt/lugha/lib/lugha
mkdir -p "$PKG"
for entry in "$REPO"/kit/*; do ln -sfn "$entry" "$PKG/$(basename "$entry")"; done
for floor in data runtimes training export cli; do ln -sfn "$REPO/$floor" "$PKG/$floor"; done
find "$PKG" -maxdepth 1 -xtype l -delete  # a module removed from kit/

env -u LD_LIBRARY_PATH -u LD_PRELOAD -u PYTHONHOME -u VIRTUAL_ENV \
  PYTHONPATH=/opt/lugha/lib:$SITES PYTHONNOUSERSITE=1 PATH=/opt/lugha/site/bin:/usr/bin:/bin \
  "$QEMU" -cpu "$CPU" -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"
