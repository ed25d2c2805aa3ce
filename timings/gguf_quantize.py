"""GGUF quantize cost: the runner vs the bare llama.cpp calls, measured in the same run.

1. sweep: the runner's quantize stage for N quant types (one f16 conversion, reused) vs N
   independent convert+quantize runs (what N separate scripts do). Goal: ratio <= 0.4.
2. overhead: the runner's quantize stage for one type (conversion already cached) vs the bare
   llama_model_quantize call with identical settings. Goal: ratio <= 1.05. Medians of --repeats.

    python timings/gguf_quantize.py                      # the embedded SmolLM2-135M
    python timings/gguf_quantize.py --model /path/to/hf  # any HF folder
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runner.cache import Cache  # noqa: E402
from runner.config.schema import ModelConfig  # noqa: E402
from runner.data.models import resolve_model  # noqa: E402
from runner.formats import load_format_preset  # noqa: E402
from runner.formats.artifacts import artifact_key, quantize  # noqa: E402
from runner.formats.gguf.format import convert_once, converter_dir, quantize_file  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf"
TYPES = ["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k"]


def model_cfg(path):
    schema = OmegaConf.structured(ModelConfig)
    if path:
        return OmegaConf.merge(schema, {"name": Path(path).name, "source": "hf", "id": path})
    return OmegaConf.merge(schema, OmegaConf.load(CONF / "model" / "smollm2-135m.yaml"))


def bare_convert(conv: Path, model_dir: Path, out: Path) -> None:
    env = {"PYTHONPATH": f"{conv / 'gguf-py'}:{conv}", "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [
            sys.executable,
            str(conv / "convert_hf_to_gguf.py"),
            str(model_dir),
            "--outfile",
            str(out),
            "--outtype",
            "f16",
        ],
        check=True,
        capture_output=True,
        env=env,
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="HF folder (default: the embedded SmolLM2-135M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    hardware = OmegaConf.create({"threads": args.threads})
    calib = OmegaConf.load(CONF / "calibration" / "packaged.yaml")
    work = Path(tempfile.mkdtemp(prefix="qrun-bench-"))
    try:
        shared = Cache(work / "shared")
        model = resolve_model(model_cfg(args.model), shared)
        conv = converter_dir(shared)
        how = "requantizing its source GGUF" if model.source_gguf else "convert_hf_to_gguf.py"
        print(
            f"model: {model.name} ({model.n_params / 1e6:.1f}M params), types: {', '.join(TYPES)}, threads "
            f"{args.threads}; "
            f"the runner makes its f16 GGUF once by {how}, the independent runs use convert_hf_to_gguf.py each time"
        )

        # 1. one sweep (convert once) vs independent convert+quantize runs
        sweep_cache = Cache(work / "sweep")
        for d in ("models", "packages"):  # the dequantized model and the converter are not what is measured
            if (shared.root / d).is_dir():
                shutil.copytree(shared.root / d, sweep_cache.root / d, dirs_exist_ok=True)
        cfgs = [load_format_preset(f"gguf_{t}", "bench") for t in TYPES]
        runner_s = timed(lambda: [quantize(model, c, calib, hardware, sweep_cache) for c in cfgs])

        def independent():
            for t in TYPES:
                d = Path(tempfile.mkdtemp(dir=work))
                bare_convert(conv, model.path, d / "f16.gguf")
                quantize_file(d / "f16.gguf", d / f"{t}.gguf", t, args.threads)
                shutil.rmtree(d)

        independent_s = timed(independent)
        print(
            f"sweep of {len(TYPES)} types: runner {runner_s:.1f} s, independent runs {independent_s:.1f} s, "
            f"ratio {runner_s / independent_s:.2f} (goal <= 0.4)"
        )

        # 2. the runner's stage vs the bare call, conversion cached, same type and threads
        base = convert_once(model, shared)
        cfg = load_format_preset("gguf_q4_k_m", "bench")
        runner_t, bare_t = [], []
        for _ in range(args.repeats):
            entry = shared.root / "artifacts" / artifact_key(model, cfg, calib, shared)
            shutil.rmtree(entry, ignore_errors=True)
            runner_t.append(timed(lambda: quantize(model, cfg, calib, hardware, shared)))
            out = work / "bare-q4_k_m.gguf"
            bare_t.append(timed(lambda: quantize_file(base, out, "q4_k_m", args.threads)))
            out.unlink()
        r, b = statistics.median(runner_t), statistics.median(bare_t)
        print(
            f"q4_k_m quantize: runner stage {r:.2f} s, bare llama_model_quantize {b:.2f} s (medians of "
            f"{args.repeats}), "
            f"ratio {r / b:.3f} (goal <= 1.05)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
