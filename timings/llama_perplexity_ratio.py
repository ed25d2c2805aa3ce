"""The runner's quality numbers vs llama.cpp's own `llama-perplexity --kl-divergence`, on the same GGUF files and the
same token ids: runner ÷ llama-perplexity for ppl, mean KLD, RMS Δp and same-top-p. Goal: every ratio within 1 % of 1.

Both sides run llama.cpp: the runner through its llama_cpp engine (llama-cpp-python, the code `qrun` runs: the
evaluate stage's own evaluate() with eval=llama_perplexity, the protocol preset), llama-perplexity built from the
llama.cpp sources vendored in the same llama-cpp-python's sdist (runner/system/llama_cpp_tools.py, as
timings/llama_bench_ratio.py builds llama-bench). The baseline is the model's gguf_f16 file on both sides
(eval.baseline=gguf_f16); llama-perplexity writes its logits file from it (--kl-divergence-base) over the eval text
the runner tokenizes, and the token ids in that file are checked against the runner's stream id for id.

    python timings/llama_perplexity_ratio.py                       # SmolLM2 (model=smollm2-135m), 32 chunks of 512
    python timings/llama_perplexity_ratio.py model=hf model.id=/models/x eval.n_tokens=4096   # any overrides

Where the two differ, docs/measurements.md#parity-with-llamacpps-llama-perplexity says why.
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from runner import metrics as M  # noqa: E402
from runner.system import llama_cpp_tools  # noqa: E402
from runner.system import llama_perplexity as lp  # noqa: E402

FORMATS = ("gguf_q8_0", "gguf_q4_k_m", "gguf_q2_k")
# (row, the runner's metric, llama-perplexity's line): the four the parity goal holds
COMPARED = (
    ("ppl", M.QUALITY_PPL, "ppl"),
    ("mean KLD", M.QUALITY_KLD_MEAN, "kld_mean"),
    ("RMS Δp", M.QUALITY_DP_RMS, "dp_rms"),
    ("same top p", M.QUALITY_TOP1_AGREE, "same_top_p"),
)
# shown too, no goal: the percentiles come from fixed bins (2.33 %), the medians of tiny values are noisy
SHOWN = (
    ("PPL(base)", M.QUALITY_BASELINE_PPL, "ppl_base"),
    ("PPL ratio", M.QUALITY_PPL_RATIO, "ppl_ratio"),
    ("Δp mean", M.QUALITY_DP_MEAN, "dp_mean"),
    ("KLD median", M.QUALITY_KLD_P50, "kld_p50"),
    ("KLD p90", M.QUALITY_KLD_P90, "kld_p90"),
    ("KLD p99", M.QUALITY_KLD_P99, "kld_p99"),
    ("KLD p99.9", M.QUALITY_KLD_P99_9, "kld_p99_9"),
    ("KLD max", M.QUALITY_KLD_MAX, "kld_max"),
)
PROTOCOL = ["eval=llama_perplexity", "eval.baseline=gguf_f16", "eval.bootstrap.resamples=0"]


def compose(overrides: List[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from runner.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*PROTOCOL, *overrides])


def llama_perplexity_binary(jobs: int) -> Path:
    binary = llama_cpp_tools.binary("llama-perplexity")
    if binary is None:
        print(f"building llama-perplexity in {llama_cpp_tools.home()} (10-15 min on 2 cores, once)", file=sys.stderr)
        llama_cpp_tools.build(["llama-perplexity"], jobs)
        binary = llama_cpp_tools.binary("llama-perplexity")
    assert binary is not None
    return binary


def runner_turns_repack_off() -> bool:
    """Whether the runner's llama_cpp engine loads without llama.cpp's repacked (AMX) weight buffers here."""
    import llama_cpp.llama_cpp as lc

    return b"AMX_INT8 = 1" in lc.llama_print_system_info()


def parity(overrides: List[str], formats=FORMATS, scratch=None, jobs: int = 2) -> Tuple[dict, Dict[str, tuple]]:
    """(the tokens' check, {format: (the runner's quality metrics, llama-perplexity's statistics)})."""
    from runner.cache import Cache
    from runner.data.corpus import load_corpus
    from runner.data.models import resolve_model
    from runner.data.tokenization import resolve_add_bos
    from runner.engines import get_engine
    from runner.formats import load_format_preset
    from runner.formats.artifacts import quantize
    from runner.quality.reference import baseline_reference
    from runner.quality.stream import iter_windows, uses_bos
    from runner.stages import StageContext, check_values
    from runner.stages.evaluate import evaluate

    scratch = Path(scratch or tempfile.mkdtemp(prefix="qrun-llama-perplexity-"))
    cfg = compose(overrides)
    check_values(cfg)
    cache = Cache(cfg.cache.dir, cfg.cache.mode, scratch=scratch / "scratch")
    model = resolve_model(cfg.model, cache)
    ctx = StageContext(cfg=cfg, model=model, cache=cache, run_dir=scratch, engine=get_engine("llama_cpp"))
    _, base = ctx.baseline
    bos_rule = None
    if cfg.eval.add_bos is None:  # what llama-perplexity does: the base GGUF's rule, not the base model's tokenizer's
        bos_rule = gguf_adds_bos(gguf(base))
        cfg.eval.add_bos = bos_rule
    stream, ref = ctx.stream, baseline_reference(ctx)
    own_gguf = model.source_gguf if model.source_gguf and model.source_gguf.is_file() else None
    chunks, n_ctx = len(list(iter_windows(stream, cfg.eval))), cfg.eval.ctx_len
    text = scratch / "eval.txt"
    text.write_text(load_corpus(cfg.eval.corpus, cache, "eval.corpus").text)
    binary, logits = llama_perplexity_binary(jobs), scratch / "base.kld"
    no_repack, threads = runner_turns_repack_off(), cfg.hardware.threads
    lp.write_base(binary, gguf(base), text, logits, n_ctx, chunks, threads, no_repack)
    theirs = lp.logits_file_tokens(logits)
    ours = lp.stream_tokens(stream.ids, stream.bos_id, uses_bos(stream, cfg.eval), len(theirs))
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    tokens = {
        "n": len(theirs),
        "chunks": chunks,
        "n_ctx": n_ctx,
        "differ": differ,
        "same": len(ours) == len(theirs) and not differ,
        "tokenizer": stream.tokenizer,
        "add_bos": uses_bos(stream, cfg.eval),
        "add_bos_from_gguf": bos_rule,
        "model_adds_bos": resolve_add_bos(None, model.load_tokenizer(), own_gguf)[0],
        "no_repack": no_repack,
        "threads": threads,
        "kld_topk": cfg.eval.kld_topk,
    }
    results = {}
    for name in formats:
        artifact = quantize(model, load_format_preset(name, "format"), cfg.calibration, cfg.hardware, cache)
        quality, _ = evaluate(artifact, model, cfg.eval, stream, ref, cfg.hardware, "llama_cpp")
        results[name] = (quality, lp.compare(binary, gguf(artifact), logits, n_ctx, threads, no_repack))
    return tokens, results


def gguf_adds_bos(path: Path) -> bool:
    from runner.data.tokenization import resolve_add_bos

    return resolve_add_bos(None, None, path)[0]


def gguf(artifact) -> Path:
    return artifact.path / artifact.manifest["weight_files"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="qrun overrides (default: the embedded SmolLM2)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile jobs for the one-time build")
    args = ap.parse_args()
    tokens, results = parity(args.overrides, args.formats.split(","), jobs=args.jobs)
    print(
        f"{tokens['chunks']} chunks of {tokens['n_ctx']} tokens, {tokens['threads']} threads; tokens "
        + (
            "identical"
            if tokens["same"]
            else f"DIFFER at {len(tokens['differ'])} positions, first {tokens['differ'][:5]}"
        )
        + f" ({tokens['n']} ids; the runner's stream tokenized by {tokens['tokenizer']}, BOS {tokens['add_bos']}); "
        f"reference top-{tokens['kld_topk']}; repacked weights {'off' if tokens['no_repack'] else 'on'} on both sides"
    )
    if tokens["add_bos_from_gguf"] is not None and tokens["add_bos_from_gguf"] != tokens["model_adds_bos"]:
        print(
            f"BOS: the base GGUF's rule (add_bos={tokens['add_bos_from_gguf']}, what llama-perplexity does) differs "
            f"from the base model's (add_bos={tokens['model_adds_bos']}, what `qrun` does by default): eval.add_bos "
            "follows the GGUF here"
        )
    print(f"{'':12}" + "".join(f"{f:>36}" for f in results))
    print(f"{'':12}" + f"{'runner':>12}{'llama-ppl':>12}{'ratio':>12}" * len(results))
    for rows, mark in ((COMPARED, "*"), (SHOWN, " ")):
        for label, ours_name, theirs_name in rows:
            line = f"{mark}{label:11}"
            for ours, theirs in results.values():
                a, b = ours.get(ours_name), theirs[theirs_name]
                ratio = f"{a / b:12.4f}" if a is not None and b else f"{'-':>12}"
                line += f"{a if a is not None else float('nan'):12.6g}{b:12.6g}{ratio}"
            print(line)
    worst = max(abs(ours[o] / theirs[t] - 1) for ours, theirs in results.values() for _, o, t in COMPARED)
    print(f"* the parity goal: every ratio within 1 % of 1; the worst is {100 * worst:.3f} % off", end="")
    rounded = [
        f"{n} {label}"
        for n, (ours, theirs) in results.items()
        for label, o, t in COMPARED
        if not within(ours[o], theirs, t)
    ]
    print(f"; beyond 1 % and llama-perplexity's printed rounding: {', '.join(rounded) or 'none'}")


def within(ours: float, theirs: dict, line: str, rel: float = 0.01) -> bool:
    """ours equals llama-perplexity's printed value within `rel`, or within the rounding of its last printed digit."""
    return abs(ours - theirs[line]) <= max(rel * abs(theirs[line]), theirs[line + lp.ROUNDING])


if __name__ == "__main__":
    main()
