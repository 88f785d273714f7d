#!/usr/bin/env bash
# Wheels the GPU machine's image lacks for benchmarks/gpu_checks.py (it has torch, numpy, pandas,
# matplotlib, tabulate, tiktoken, PyYAML, but not Hydra / OmegaConf), built for its Python 3.12.
# Run where pip reaches a registry, from the checkout that travels to the GPU machine:
#     bash benchmarks/gpu_wheels.sh
# then carry .whl and start the GPU command with the install line printed at the end.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.2 omegaconf==2.3.0
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3   # pure Python, sdist only on PyPI
ls .whl
echo 'install there with: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site'
