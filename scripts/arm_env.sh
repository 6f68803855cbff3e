#!/usr/bin/env bash
# Build an emulated Raspberry Pi (aarch64, Debian bookworm = Pi OS Bookworm, Python 3.11) on an x86 host,
# for parity checks of bundles without ARM hardware. Idempotent; re-running only redoes what changed.
#
#   scripts/arm_env.sh [DIR]            # default .cache/arm64; then scripts/arm_test.sh --cpu cortex-a72 -- ...
#
# Nothing ARM is executed to build it (no emulated dpkg/pip): arm64 .debs are resolved and downloaded by the
# host's apt-get from a private apt root (the host's dpkg architectures are left alone) and unpacked with
# `dpkg -x`; aarch64 wheels are installed by the host's pip with --platform/--target. What it makes:
#   DIR/sysroot/             python3.11 and its libraries (Debian arm64), the qemu -L root's content
#   DIR/sysroot/opt/lugha/site   aarch64 wheels: numpy pillow tokenizers onnxruntime ai-edge-litert pytest
#   DIR/sysroot/opt/lugha/site-tflite   tflite-runtime + numpy<2 (first on the path with arm_test.sh --tflite)
#   DIR/roots/<cpu>/         one qemu -L root per CPU: links to sysroot/* plus its own proc/cpuinfo
#                            (qemu 7.2 does not emulate /proc/cpuinfo for aarch64; -L shadows it, see below)
# Environment: ARM_MIRROR (Debian mirror URL), ARM_SUITE (bookworm), ARM_PIP_PINS (space-separated pins;
# default: the versions installed in .venv, so emulated and host engines are the same releases).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DIR=$(mkdir -p "${1:-.cache/arm64}" && cd "${1:-.cache/arm64}" && pwd)
SYSROOT=$DIR/sysroot
APTROOT=$DIR/apt
MIRROR=${ARM_MIRROR:-http://deb.debian.org/debian}
SUITE=${ARM_SUITE:-bookworm}
PIP=${PIP:-$REPO/.venv/bin/python -m pip}
start=$(date +%s)
say() { printf '\033[1m[arm_env]\033[0m %s\n' "$*"; }

# 1. qemu-user-static: runs aarch64 binaries on x86. binfmt is not registered (a machine-wide change):
#    arm_test.sh calls qemu directly. Without it a guest program cannot exec another aarch64 binary, so a
#    subprocess of the emulated python fails with ENOEXEC (lugha doctor then imports engines in-process).
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  say "installing qemu-user-static"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static >/dev/null
fi

# 2. arm64 python3.11 + the C/C++ runtime the wheels link to, from a private apt root: an empty dpkg
#    status makes apt resolve the whole dependency closure, as on a fresh Pi, and download it only.
if [ ! -x "$SYSROOT/usr/bin/python3.11" ]; then
  say "resolving and downloading arm64 .debs of python3.11 ($SUITE)"
  mkdir -p "$APTROOT"/etc/apt/{apt.conf.d,preferences.d,sources.list.d,trusted.gpg.d} \
           "$APTROOT"/var/lib/apt/lists/partial "$APTROOT"/var/cache/apt/archives/partial "$APTROOT"/var/lib/dpkg
  : > "$APTROOT/var/lib/dpkg/status"
  key=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    echo "deb [arch=arm64 signed-by=$key] $MIRROR $SUITE main"
    echo "deb [arch=arm64 signed-by=$key] $MIRROR $SUITE-updates main"
    echo "deb [arch=arm64 signed-by=$key] ${MIRROR%/debian}/debian-security $SUITE-security main"
  } > "$APTROOT/etc/apt/sources.list"
  cat > "$APTROOT/apt.conf" <<EOF
Dir "$APTROOT/";
Dir::State::status "$APTROOT/var/lib/dpkg/status";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
Debug::NoLocking "true";
EOF
  export APT_CONFIG=$APTROOT/apt.conf
  apt-get update -q >/dev/null
  apt-get install -y -q --download-only python3.11 libstdc++6 libgcc-s1 >/dev/null
  unset APT_CONFIG
  rm -rf "$SYSROOT.partial" && mkdir -p "$SYSROOT.partial"
  n=0
  for deb in "$APTROOT"/var/cache/apt/archives/*.deb; do dpkg -x "$deb" "$SYSROOT.partial"; n=$((n + 1)); done
  # Absolute symlinks (/lib/ld-linux-aarch64.so.1 -> /lib/aarch64-linux-gnu/...) would point into the HOST
  # when the kernel follows them: make every one relative, so it stays inside the sysroot.
  "$REPO/.venv/bin/python" - "$SYSROOT.partial" <<'PY'
import os, sys
root = sys.argv[1]
for d, dirs, files in os.walk(root):
    for name in dirs + files:
        p = os.path.join(d, name)
        if os.path.islink(p) and os.readlink(p).startswith("/"):
            target = os.path.join(root, os.readlink(p).lstrip("/"))
            os.unlink(p)
            os.symlink(os.path.relpath(target, d), p)
PY
  (cd "$APTROOT/var/cache/apt/archives" && ls ./*.deb | sed 's|^\./||') > "$SYSROOT.partial/.lugha-debs"
  rm -rf "$SYSROOT" && mv "$SYSROOT.partial" "$SYSROOT"
  rm -rf "$APTROOT"  # package lists and .debs (~140 MB): the sysroot is what is kept; .lugha-debs lists them
  say "unpacked $n .debs into $SYSROOT"
fi

# 3. aarch64 wheels, installed by the host's pip for the emulated interpreter (cp311, glibc 2.36).
pins=${ARM_PIP_PINS:-}
if [ -z "$pins" ]; then  # the host venv's versions, so x86 and emulated runs compare the same releases
  pins=$("$REPO/.venv/bin/python" - <<'PY'
from importlib import metadata
out = []
for pkg in ("numpy", "pillow", "tokenizers", "onnxruntime", "ai-edge-litert", "pytest"):
    try:
        out.append(f"{pkg}=={metadata.version(pkg)}")
    except metadata.PackageNotFoundError:
        out.append(pkg)
print(" ".join(out))
PY
)
fi
pins=${pins# }
SITE=$SYSROOT/opt/lugha/site
platforms=()  # Debian bookworm's glibc is 2.36: every manylinux up to it fits
for tag in manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_24_aarch64 manylinux_2_27_aarch64 \
           manylinux_2_28_aarch64 manylinux_2_31_aarch64 manylinux_2_34_aarch64 manylinux_2_35_aarch64 \
           manylinux_2_36_aarch64; do platforms+=(--platform "$tag"); done
if [ "$(cat "$SITE/.lugha-pins" 2>/dev/null)" != "$pins" ]; then
  say "installing aarch64 wheels: $pins"
  rm -rf "$SITE" && mkdir -p "$SITE"
  # shellcheck disable=SC2086  # $PIP and $pins are word lists on purpose
  $PIP install -q --target "$SITE" "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311 \
    --only-binary=:all: --no-compile --no-warn-conflicts $pins 2>&1 | { grep -v "is ignored: it is neither" || true; }
  echo "$pins" > "$SITE/.lugha-pins"
fi

# 3b. The older tflite-runtime wheel (aarch64: manylinux_2_34, cp311 at most) is built for numpy<2: it gets
#     its own folder, put first on the path by `arm_test.sh --tflite`, like a Pi with `pip install lugha[tflite]`.
TFLITE_PINS=${ARM_TFLITE_PINS:-"tflite-runtime==2.14.0 numpy<2"}
TSITE=$SYSROOT/opt/lugha/site-tflite
if [ "$(cat "$TSITE/.lugha-pins" 2>/dev/null)" != "$TFLITE_PINS" ]; then
  say "installing aarch64 wheels for --tflite: $TFLITE_PINS"
  rm -rf "$TSITE" && mkdir -p "$TSITE"
  # shellcheck disable=SC2086
  $PIP install -q --target "$TSITE" "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311 \
    --only-binary=:all: --no-compile --no-warn-conflicts --no-deps $TFLITE_PINS 2>&1 | { grep -v "is ignored: it is neither" || true; }
  echo "$TFLITE_PINS" > "$TSITE/.lugha-pins"
fi

# 4. One qemu -L root per CPU. qemu-user 7.2 hands an aarch64 guest the HOST's /proc/cpuinfo (x86 flags,
#    no "CPU part"), and ONNX Runtime's cpuinfo then fails at import. qemu opens every absolute guest path
#    as ROOT/path when that file exists (util/path.c), /proc included, so ROOT/proc/cpuinfo shadows it.
#    (qemu >= 8.2 emulates /proc/cpuinfo for arm itself; its answer then wins over the file.)
#    Cores: the host's count, at most 4, so /proc/cpuinfo agrees with /sys/devices/system/cpu/online.
cores=$(nproc); [ "$cores" -gt 4 ] && cores=4
cpuinfo() {  # $1 = variant, $2 = part, $3 = revision, $4 = features, $5 = board, $6 = board revision
  for ((i = 0; i < cores; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$4"
    printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$1" "$2" "$3"
  done
  printf 'Hardware\t: BCM2835\nRevision\t: %s\nSerial\t\t: 100000000000beef\nModel\t\t: %s\n' "$6" "$5"
}
for cpu in cortex-a72 cortex-a76; do
  root=$DIR/roots/$cpu
  mkdir -p "$root/proc"
  for entry in "$SYSROOT"/*; do ln -sfn "../../sysroot/$(basename "$entry")" "$root/$(basename "$entry")"; done
  case $cpu in
    cortex-a72) cpuinfo 0x0 0xd08 3 "fp asimd evtstrm crc32 cpuid" "Raspberry Pi 4 Model B Rev 1.4" c03114 ;;
    cortex-a76) cpuinfo 0x4 0xd0b 1 "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" \
                        "Raspberry Pi 5 Model B Rev 1.0" d04170 ;;
  esac > "$root/proc/cpuinfo"
done

say "ready in $(( $(date +%s) - start ))s: $(du -sh "$SYSROOT" | cut -f1) in $DIR/sysroot" \
    "(wheels $(du -sh "$SITE" | cut -f1), tflite $(du -sh "$TSITE" | cut -f1)); try: scripts/arm_test.sh --cpu cortex-a72 -- -m lugha.cli doctor"
