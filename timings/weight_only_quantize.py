"""Weight-only quantize cost: the runner's quantize stage vs the bare library call, same settings, same run.

For each (format, backend) the runner's quantize (`runner.formats.artifacts.quantize`: validation,
calibration from the configured text, the backend call, tokenizer copy, manifest with sha256) and a
bare script doing the same work straight against the library (load, tokenize the same text into the
same windows, quantize, save, copy the tokenizer) run alternately; one untimed warm-up of each first
(imports). Prints medians and the ratio runner / bare (goal <= 1.05).

    python timings/weight_only_quantize.py                  # tiny random Llama, default backends
    python timings/weight_only_quantize.py --all-backends   # + llmcompressor GPTQ/W8A16, bitsandbytes
    python timings/weight_only_quantize.py --smollm2        # quantize wall time per format/backend on SmolLM2-135M
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # the bare call needs it as much as the runner does

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from runner.cache import Cache  # noqa: E402
from runner.config.schema import register_configs  # noqa: E402
from runner.data.corpus import load_corpus  # noqa: E402
from runner.data.models import resolve_model  # noqa: E402
from runner.formats import get_format  # noqa: E402
from runner.formats.artifacts import artifact_key, quantize  # noqa: E402

DEFAULT = [("gptq_int4", "gptqmodel"), ("awq_int4", "llmcompressor"), ("int8", "torchao"), ("nf4", "bitsandbytes")]
MORE = [("gptq_int4", "llmcompressor"), ("int8", "bitsandbytes"), ("int8", "llmcompressor")]


def tiny_model(out: Path, text: str) -> Path:
    """The test suite's tiny Llama (scripts/tiny_model.py), its tokenizer trained on `text`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_model import build

    (out / "text.txt").write_text(text)
    return build(out, out / "text.txt")


def bare(fmt, backend, cfg, model_dir: Path, text: str, out: Path) -> None:
    """What a user's own script does with the library, with the runner's settings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    f, c = cfg.format, cfg.calibration
    tok = AutoTokenizer.from_pretrained(model_dir)
    samples = None
    if fmt in ("gptq_int4", "awq_int4"):  # calibrated: the same seeded windows of the same text
        ids = tok(text, add_special_tokens=False)["input_ids"]
        picked = sorted(random.Random(c.seed).sample(range(len(ids) // c.seq_len), c.n_samples))
        samples = [ids[i * c.seq_len : (i + 1) * c.seq_len] for i in picked]
    if (fmt, backend) == ("gptq_int4", "gptqmodel"):
        from gptqmodel import GPTQModel, QuantizeConfig

        qc = QuantizeConfig(
            bits=f.bits,
            group_size=f.group_size,
            sym=f.sym,
            desc_act=f.desc_act,
            damp_percent=f.damp_percent,
            true_sequential=f.true_sequential,
            offload_to_disk=False,
        )
        m = GPTQModel.load(str(model_dir), qc, dtype=torch.float32, device="cpu")
        m.quantize(
            [
                {"input_ids": torch.tensor([s]), "attention_mask": torch.ones(1, len(s), dtype=torch.long)}
                for s in samples
            ]
        )
        m.save(str(out))
    elif backend == "llmcompressor":
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = lambda self, *a, **k: None  # no accelerator to pin for
        bits, sym, group = {
            "gptq_int4": (f.get("bits"), f.get("sym"), f.get("group_size")),
            "awq_int4": (f.get("w_bit"), not f.get("zero_point"), f.get("q_group_size")),
            "int8": (8, True, None),
        }[fmt]
        args = QuantizationArgs(
            num_bits=bits, type="int", symmetric=sym, strategy="group" if group else "channel", group_size=group
        )
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=args)}
        recipe = {
            "gptq_int4": lambda: [
                GPTQModifier(config_groups=groups, ignore=["lm_head"], dampening_frac=f.damp_percent, actorder=None)
            ],
            "awq_int4": lambda: [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=["lm_head"])],
            "int8": lambda: [QuantizationModifier(config_groups=groups, ignore=["lm_head"])],
        }[fmt]()
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        data = (
            {}
            if fmt == "int8"
            else dict(
                dataset=Dataset.from_dict({"input_ids": samples, "attention_mask": [[1] * len(s) for s in samples]}),
                num_calibration_samples=len(samples),
                max_seq_length=c.seq_len,
                shuffle_calibration_samples=False,
            )
        )
        oneshot(model=m, recipe=recipe, **data)
        m.save_pretrained(out, save_compressed=True)
    else:
        from transformers import BitsAndBytesConfig, TorchAoConfig

        if backend == "torchao":
            from torchao.quantization import Int8WeightOnlyConfig

            qc = TorchAoConfig(quant_type=Int8WeightOnlyConfig())
        elif fmt == "int8":
            qc = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=f.llm_int8_threshold)
        else:
            qc = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=f.quant_type,
                bnb_4bit_use_double_quant=f.double_quant,
                bnb_4bit_compute_dtype=torch.float32,
            )
        m = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=torch.float32, device_map="cpu", quantization_config=qc
        )
        m.save_pretrained(out, safe_serialization=True)
    if backend in ("gptqmodel", "llmcompressor"):  # the same fp16 storage of unquantized tensors as the runner's
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        for st in out.glob("*.safetensors"):
            with safe_open(st, framework="pt") as fh:
                meta = fh.metadata()
            save_file(
                {k: v.half() if v.dtype == torch.float32 else v for k, v in load_file(st).items()}, st, metadata=meta
            )
    tok.save_pretrained(out)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--smollm2", action="store_true", help="SmolLM2-135M: runner quantize wall time per format/backend, once"
    )
    ap.add_argument("--all-backends", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calibration", default="quick", help="calibration preset (conf/calibration)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    register_configs()
    work = Path(tempfile.mkdtemp(prefix="qrun-wo-bench-"))
    shared = Cache(os.environ.get("QRUN_CACHE_DIR", ROOT / ".qrun_cache"))
    try:

        def cfg_for(fmt, backend, model_over):
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                return compose(
                    "config",
                    overrides=[
                        f"format={fmt}",
                        f"format.backend={backend}",
                        f"calibration={args.calibration}",
                        *model_over,
                    ],
                )

        cases = DEFAULT + (MORE if args.all_backends or args.smollm2 else [])
        bench = Cache(work / "cache")  # the unpacked calibration texts are reused, never the artifacts
        calib_text = load_corpus(cfg_for(*DEFAULT[0], ["model=hf", "model.id=/x"]).calibration.corpus, bench, "c").text

        def decided(cfg, model):
            """cfg with what its format leaves to the model decided (the group size), as the runner decides it, so
            the bare call gets the same settings; and the artifact's key."""
            cfg.format, facts = get_format(cfg.format.family).resolve(cfg.format, model, cfg.hardware)
            return cfg, artifact_key(model, cfg.format, cfg.calibration, bench, facts)

        def runner_stage(cfg, model):
            cfg, key = decided(cfg, model)
            shutil.rmtree(bench.root / "artifacts" / key, ignore_errors=True)
            return quantize(model, cfg.format, cfg.calibration, cfg.hardware, bench)

        if args.smollm2:
            base = cfg_for(*DEFAULT[0], [])
            model = resolve_model(base.model, shared)
            print(f"SmolLM2-135M quantize wall time, runner stage, calibration={args.calibration}, 2 threads")
            for fmt, backend in cases:
                cfg = cfg_for(fmt, backend, [])
                s = timed(lambda: runner_stage(cfg, model))
                print(f"  {fmt:10s} {backend:14s} {s:7.1f} s", flush=True)
            return
        (work / "tiny").mkdir()
        model_dir = tiny_model(work / "tiny", calib_text[:400_000])
        over = ["model=hf", f"model.id={model_dir}"]
        model = resolve_model(cfg_for(*DEFAULT[0], over).model, shared)
        print(
            f"tiny Llama ({model.n_params / 1e6:.2f}M params), calibration={args.calibration}, medians of "
            f"{args.repeats}"
        )
        print(f"  {'format':10s} {'backend':14s} {'runner s':>9s} {'bare s':>8s} {'ratio':>6s}")
        for fmt, backend in cases:
            cfg, _ = decided(cfg_for(fmt, backend, over), model)
            runner = lambda: runner_stage(cfg, model)  # noqa: E731
            bare_call = lambda: bare(fmt, backend, cfg, model_dir, calib_text, Path(tempfile.mkdtemp(dir=work)))  # noqa: E731
            runner(), bare_call()  # warm-up: imports, first-call compilation
            r, b = [], []
            for i in range(args.repeats):
                for fn, out in ((runner, r), (bare_call, b))[:: 1 if i % 2 == 0 else -1]:
                    out.append(timed(fn))
            mr, mb = statistics.median(r), statistics.median(b)
            print(f"  {fmt:10s} {backend:14s} {mr:9.2f} {mb:8.2f} {mr / mb:6.3f}", flush=True)
        print("goal: ratio <= 1.05")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
