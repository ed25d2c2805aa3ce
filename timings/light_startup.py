"""Start-up cost of the runner without the ML libraries: `qrun --cfg job`, `import runner.cli`, and the
re-run of a finished job (found FINISHED in MLflow, reused), each N times in fresh processes.

    python timings/light_startup.py                         # this checkout
    python timings/light_startup.py --before /tmp/before -n 5   # + another checkout, and the ratio

`--before` is a checkout of older code (e.g. `git worktree add /tmp/before HEAD~1`); it runs on this
venv with PYTHONPATH pointing at it. The re-run uses a tiny random Llama (scripts/tiny_model.py) and
stages=[quantize], first run untimed; each checkout gets its own store (the code is part of the job key).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = "import sys, {mod}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"


def timed(cmd, cwd, env) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return wall


def tiny_model(work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_model import build

    text = work / "text.txt"
    stdlib = Path(os.__file__).parent  # any varied text trains the tokenizer (vocab 512)
    text.write_text("".join(p.read_text(errors="ignore") for p in sorted(stdlib.glob("[a-c]*.py"))[:20]))
    return build(work / "tiny", text)


def measure(code: Path, n: int, model: Path, work: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code), QRUN_CACHE_DIR=str(work / "cache"))
    qrun = [sys.executable, "-m", "runner"]
    job = ["model=hf", f"model.id={model}", "format=fp32", "stages=[quantize]"]
    timed(qrun + job, work, env)  # the first run, which the re-runs find
    runs = {
        "qrun --cfg job": [timed(qrun + ["--cfg", "job"], work, env) for _ in range(n)],
        "import runner.cli": [timed([sys.executable, "-c", "import runner.cli"], work, env) for _ in range(n)],
        "re-run of a finished job": [timed(qrun + job, work, env) for _ in range(n)],
    }
    loaded = subprocess.run(
        [sys.executable, "-c", CHECK.format(mod="runner.cli")], env=env, capture_output=True, text=True
    )
    print(f"{code}: import runner.cli loads {loaded.stdout.strip() or loaded.stderr.strip()[-200:]}")
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="runs of each command (fresh processes)")
    ap.add_argument("--before", type=Path, help="a checkout of the older code, measured first")
    ap.add_argument("--after", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="qrun-startup-") as tmp:
        model = tiny_model(Path(tmp))
        for label, code in (("before", args.before), ("after", args.after)):
            if code is not None:
                work = Path(tmp) / label
                work.mkdir()
                results[label] = measure(code.resolve(), args.n, model, work)
    print(f"\n{'command':26} {'checkout':8} {'median s':>9} {'min s':>7} {'max s':>7}")
    for what in results["after"]:
        for label, runs in results.items():
            t = runs[what]
            print(f"{what:26} {label:8} {statistics.median(t):9.2f} {min(t):7.2f} {max(t):7.2f}")
        if "before" in results:
            ratio = statistics.median(results["after"][what]) / statistics.median(results["before"][what])
            print(f"{what:26} {'ratio':8} {ratio:9.2f}  (after / before, medians)")


if __name__ == "__main__":
    main()
