#!/usr/bin/env bash
# Installs everything this project needs on a fresh Debian machine with Python 3.11:
# ffmpeg from apt, then a virtualenv at .venv with CPU torch pinned first and used as a
# constraint for the rest (open_clip's unpinned torchvision would otherwise pull a newer
# torch and several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() {
  # pip warns about every index location this machine does not serve; those lines are noise
  # PYTHONWARNINGS reaches pip's build subprocess: setuptools' 11-line "Editable installation" warning is noise
  PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip_install --upgrade pip
pip_install -c constraints.txt "torch==2.13.0"
pip_install -c constraints.txt -e ".[dev]"
# PyPI's torchvision is a CUDA build that does not import next to CPU torch; this start-up hook makes
# `import torchvision` / `import open_clip` work in any script run by this venv (model/torchvision_shim.py).
SITE_PACKAGES="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
echo "import model.torchvision_shim as shim; shim.install_import_hook()" >"$SITE_PACKAGES/clip4clip_torchvision_shim.pth"
echo "installed into $(pwd)/.venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
