#!/usr/bin/env bash
# Set up bench in .venv (idempotent): the system OpenJPEG library glymur needs, then the
# package with the extras given as arguments, at the versions pinned in constraints.txt.
#   scripts/setup.sh            # the package
#   scripts/setup.sh test dev   # plus the test and dev extras
#   scripts/setup.sh mmseg      # plus mmsegmentation (compiles mmcv first)
#   scripts/setup.sh learned    # plus CompressAI and numba (torch and torchvision from the index)
#   scripts/setup.sh ray        # plus Ray (bench run --executor ray)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
[ -n "$python" ] || { echo "setup: no python3 found; install Python 3.11" >&2; exit 1; }

# JPEG 2000 goes through glymur, which loads the system's libopenjp2 at run time.
if ! ldconfig -p 2>/dev/null | grep -q 'libopenjp2\.so'; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing libopenjp2-7 (OpenJPEG) with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenjp2-7 >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenjp2-7 >/dev/null
  else
    echo "setup: warning: libopenjp2 not found; the jpeg2000 codec stays unusable until" \
         "OpenJPEG is installed (Debian/Ubuntu: libopenjp2-7, macOS: brew install openjpeg)" >&2
  fi
fi

# The report test opens report.html in headless Chromium (playwright, from the test extra,
# drives the system's browser): Debian's chromium package. Without it that test skips.
if [[ " $* " == *" test "* ]] && [ -z "${BENCH_CHROMIUM:-}" ] \
    && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  chromium_warning="setup: warning: no chromium found; the report's browser test skips until"
  chromium_warning+=" one is installed (Debian/Ubuntu: chromium) or BENCH_CHROMIUM names one"
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing chromium (for the report's browser test) with apt-get" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
      echo "$chromium_warning" >&2
  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    { sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
      echo "$chromium_warning" >&2
  else
    echo "$chromium_warning" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
if [[ " $* " == *" learned "* ]] && ! .venv/bin/python -c "import torchvision" 2>/dev/null; then
  # torchvision has no CPU-only build, and this machine's pip configuration may offer a
  # CPU-only torch wheel that torchvision cannot load with: --isolated takes the package
  # index's CUDA builds of both (about 5 GB; they run on a CPU too).
  echo "setup: installing torch 2.13.0 + torchvision 0.28.0 from the package index" >&2
  # A CPU-only torch (from the test extra) satisfies "torch==2.13.0" but not torchvision's ops.
  if .venv/bin/python -c "import torch, sys; sys.exit('+cpu' not in torch.__version__)" 2>/dev/null; then
    .venv/bin/python -m pip uninstall --quiet -y torch
  fi
  .venv/bin/python -m pip install --isolated --quiet --disable-pip-version-check \
    torch==2.13.0 torchvision==0.28.0
fi
if [[ " $* " == *" mmseg "* ]] && ! .venv/bin/python -c "import mmcv.ops" 2>/dev/null; then
  # mmcv has no wheel for this torch: compile it against the installed one (about 13 min on
  # 2 cores; pip keeps the built wheel in its cache for the next setup on this machine).
  echo "setup: building mmcv 2.1.0 against torch 2.13 (takes a while)" >&2
  "${pip[@]}" torch numpy setuptools wheel ninja
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${pip[@]}" --no-build-isolation mmcv
fi
extras=$(IFS=,; echo "$*")
spec="."
[ -n "$extras" ] && spec=".[$extras]"
"${pip[@]}" -e "$spec"
