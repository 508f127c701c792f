#!/usr/bin/env bash
# Create .venv and install mtfap with its test and weight extras.
# TORCH_SPEC picks the torch build: the default is the CPU build on this machine's disk;
# elsewhere, e.g. TORCH_SPEC="torch>=2.1" (CUDA build from PyPI) or any pip requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MTFAP_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -e ".[test]"
echo "mtfap installed in $VENV"
