#!/usr/bin/env bash
# The CUDA check: memory probe, a Llama-3.1-8B-shaped 2-layer model through bf16 / GPTQ / AWQ / EXL2 and
# `transformers serve --continuous-batching` at 1 and 8 users, vLLM where installed; scripts/gpu_check.py holds the
# steps, their budgets and the output. Made for one GPU with no package index, in at most 410 s.
#
# On the device tool's machine (one H100 or H200; its image has torch 2.11 + CUDA 13, transformers 5.17, accelerate,
# safetensors, sentencepiece, tokenizers, pandas, pyarrow, nvidia-ml-py, triton, nvcc, ninja; no hydra, mlflow,
# gptqmodel, llm-compressor, exllamav2, vLLM), from a checkout that has this script:
#   here, once:  echo /.whl/ >> .git/info/exclude; bash scripts/gpu_bundle.sh   # .whl/: wheels + the text sdist
#   then:        run(command="bash scripts/gpu_check.sh", timeout_s=420, carry=[".whl"])
#   results:     $OUT/summary.md (the table), gpu_check.json (every step's JSON), gpu_check.log, mlflow.db
# The repo (~1.6 MB) and .whl/ travel together: at most 64 MiB (gpu_bundle.sh prints the size). The machine's
# start costs a minute or more of the session's 15 minutes: run this once, with nothing else in the call.
# Anywhere, no GPU needed:
#   bash scripts/gpu_check.sh --dry-run     # composes every step with `qrun ... --cfg job`, prints the plan
# Env: PYTHON (default python3), OUT (the results folder), GPU_CHECK_WORK (scratch, default /tmp/gpu_check_work),
# GPU_CHECK_WHEELS (default .whl). Exit: 0 when the check ran to its end (each step's status is in the table; a
# step may have failed), 1 when a composition failed, 3 when the carried wheels did not install, 124 at the timeout.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
DRY=0
for a in "$@"; do [ "$a" = --dry-run ] && DRY=1; done
if [ "$DRY" = 0 ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  SITE=/tmp/gpu_check_site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { echo "gpu_check: the wheels in $WHEELS did not install" >&2; exit 3; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# The eval and calibration text is an sdist the runner reads from <python prefix>/share/qrun/sdists
# (runner/data/corpus.py LOCAL_SDISTS), as `make venv` leaves it; no index to fetch it from here.
if [ "$DRY" = 0 ] && ls "$WHEELS"/*.tar.gz >/dev/null 2>&1; then
  SDISTS="$("$PY" -c 'import sys; print(sys.prefix)')/share/qrun/sdists"
  mkdir -p "$SDISTS" && cp -n "$WHEELS"/*.tar.gz "$SDISTS"/ || echo "gpu_check: cannot write $SDISTS" >&2
fi
exec timeout -k 10 410 "$PY" scripts/gpu_check.py "$@"
