"""Re-running a finished sweep: wall time of the rerun as a share of the first (cold) run.

The first run starts from an empty cache and an empty MLflow store; the rerun is the identical
command in the same place: every job is found FINISHED in the store and reused (no quantization,
no evaluation, no benchmark): unchanged, it is answered from the sweep's stamp (runner/sweep_stamp.py).
Goal: rerun <= 2 s and <= 5 % of the first run.

    python timings/sweep_rerun.py                        # experiment=cpu_quick on the embedded model
    python timings/sweep_rerun.py format=fp32,gguf_q8_0 eval=quick benchmark=quick
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args, cwd, env) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"qrun failed:\n{proc.stderr[-3000:]}")
    return wall


def main():
    args = sys.argv[1:] or ["experiment=cpu_quick"]
    with tempfile.TemporaryDirectory(prefix="qrun-rerun-") as work:
        env = dict(os.environ, QRUN_CACHE_DIR=str(Path(work) / "cache"), PYTHONPATH=str(ROOT))
        first = run(args, work, env)
        second = run(args, work, env)
    print(
        f"qrun -m {' '.join(args)}: first (cold cache, empty store) {first:.1f} s, rerun {second:.1f} s, "
        f"ratio {100 * second / first:.1f} % (goal <= 2 s and <= 5 %)"
    )


if __name__ == "__main__":
    main()
