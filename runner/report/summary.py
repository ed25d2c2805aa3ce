"""The one-screen summary printed at the end of a run or a sweep, read back from MLflow."""

from typing import Dict, List

from runner import metrics as M
from runner.metrics import PERF_DECODE_TOK_S, PERF_PREFILL_TOK_S, QUALITY_KLD_MEAN, in_table
from runner.report import floor, ties
from runner.report.columns import (
    SUMMARY,
    TIE_MARKED,
    cells,
    short_task_names,
    task_names,
    used,
    with_floor,
    with_tasks,
)
from runner.report.data import baseline_name, rows_of
from runner.tracking import SKIPPED_TAG


def table(runs, tracking_uri: str | None = None) -> str:
    """The summary table, best quality first (runner/report/ties.py quality_order)."""
    rows = ties.quality_order(rows_of(runs, tracking_uri))
    columns = with_tasks(with_floor(used(SUMMARY, rows, every=True), rows), rows)
    grid = [[c.header for c in columns]] + cells(columns, rows)
    widths = [max(len(row[i]) for row in grid) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) if c.left else v.rjust(w) for c, v, w in zip(columns, row, widths)) for row in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def uncertainty_notes(runs, tracking_uri: str | None = None) -> List[str]:
    """What "±", "≈" and "~x?" in the table mean, from the params each run logged."""
    rows = rows_of(runs, tracking_uri)
    lines = []
    with_ci = [r for r in rows if any(ties.ci(r, name) for name in TIE_MARKED)]
    if with_ci:
        p = with_ci[0].params
        lines.append(
            f"±: half the width of a 95 % interval: bootstrap over {p.get('eval.bootstrap.windows', '?')} scoring "
            "windows, "
            f"{p.get('eval.bootstrap.resamples', '?')} resamples, seed {p.get('eval.bootstrap.seed', '?')} (bounds: "
            "<metric>_ci_low/_ci_high), expanded for the number of windows (wider than a plain percentile interval "
            "when they are few). Δppl, KLD and top-1 are paired with the baseline on the same tokens; ppl's "
            "interval is the text's spread. It covers text like this stream under this protocol, windows taken as "
            "independent."
        )
        lines.append(tie_legend(ties.quality_order(rows)))
    lines += floor.notes(rows)
    repeats = next((r.params.get("benchmark.repeats") for r in rows if ties.ci(r, PERF_DECODE_TOK_S)), None)
    if repeats is not None:
        lines.append(
            f"± on a speed: half the width of the 95 % t interval of its mean over the {repeats} repeats (the cell "
            "is their median); two runs' speeds are told apart by the interval of the difference of their means."
        )
    speeds = [m for m in in_table("summary") if m.name in (PERF_PREFILL_TOK_S, PERF_DECODE_TOK_S)]
    flagged = [(r, m) for r in rows for m in speeds if r.get(m.name) is not None and ties.noisy(r, m.name)]
    if flagged:
        lines.append(
            f"~x?: a speed that varied more than benchmark.noisy_cv={100 * ties.noisy_threshold(flagged[0][0]):.0f} % "
            "(coefficient of variation) over the repeats: not a fact; rerun on a quieter machine or with more repeats."
        )
        lines += [
            f"  {r.format} {m.header}: {m.format(r.get(m.name))} (range {m.format(r.get(m.name + '_min'))}-"
            f"{m.format(r.get(m.name + '_max'))}, CV {100 * r.get(m.name + '_cv'):.0f} %)"
            for r, m in flagged
        ]
    return lines + task_notes(rows)


def tie_legend(ordered) -> str:
    """What "≈" means in this table: how each marked pair of neighbouring rows was compared (runner/report/ties.py)."""
    how = {ties.comparison(a, b, m) for a, b in zip(ordered, ordered[1:]) for m in TIE_MARKED if ties.ci(b, m)} - {None}
    text = "≈: not distinguishable from the row above (rows best quality first): "
    parts = []
    if ties.PAIRED in how or not how:
        parts.append(
            "the 95 % paired bootstrap interval of the difference between the two (same windows, same "
            "resamples) contains 0"
        )
    if ties.OVERLAP in how:
        parts.append("for rows not scored on the same windows (or without window sums), their intervals overlap")
    return text + "; ".join(parts) + "."


# the summary notes a task whose accuracy barely moved while this share of its items or more flipped
FLIPS_NOTABLE = 0.05


def task_notes(rows) -> List[str]:
    """What the task columns are: which task, how many items, what ±, "kept" and the flips mean (only when a row has
    tasks), and the rows whose answers flipped on many items while their accuracy barely moved."""
    tasks = task_names(rows)
    if not tasks:
        return []
    items = dict(
        pair.split("=", 1) for r in rows for pair in r.params.get("eval.tasks_n_items", "").split(",") if "=" in pair
    )
    baseline = next((baseline_name(r.params) for r in rows if r.params.get("eval.baseline")), "eval.baseline")
    named = ", ".join(
        f"{short} = {task} ({items.get(task, '?')} items)" for task, short in short_task_names(tasks).items()
    )
    lines = [
        f"Tasks: lm-eval accuracy on {named}; ± half its 95 % interval (1.96 × lm-eval's stderr over the items), "
        f"≈ where it overlaps the row above's; kept: acc ÷ the baseline's acc (eval.baseline={baseline}) on the same "
        "items; c→i / i→c: the share of items the baseline answers correctly and this format not / the reverse "
        "(flips, Dutta et al. 2024: accuracy hides changes that cancel); kept and flips ± half a 95 % paired bootstrap "
        "interval over the items (the same resample of items for both)."
    ]
    return lines + flip_notes(rows, tasks)


def flip_notes(rows, tasks: List[str]) -> List[str]:
    """ "many answers changed, accuracy did not": the paired interval of acc − the baseline's contains 0 while at
    least FLIPS_NOTABLE of the items flipped and the flips' own interval excludes 0."""
    out = []
    for r in rows:
        for task in tasks:
            flips, delta = M.task_metric(task, M.TASK_FLIPS), M.task_metric(task, M.TASK_ACC_DELTA)
            f, fi, d, di = r.get(flips), ties.ci(r, flips), r.get(delta), ties.ci(r, delta)
            if None in (f, fi, d, di) or f < FLIPS_NOTABLE or fi[0] <= 0.0 or not di[0] <= 0.0 <= di[1]:
                continue
            fm, dm = M.get(flips), M.get(delta)
            out.append(
                f"Flips on {r.label} {task}: {fm.format(f)} of the items flipped against the baseline "
                f"({fm.format(fi[0])}-{fm.format(fi[1])}) while its accuracy moved only {dm.format(d)} (interval "
                f"{dm.format(di[0])} to {dm.format(di[1])}, contains 0): the same accuracy, other answers."
            )
    return out


def kld_notes(runs, k: str) -> List[str]:
    """What quality/kld_mean is, per engine, from how it returned its log-probs (the run's eval.logprobs)."""
    full: Dict[str, List[str]] = {}
    top: Dict[tuple, List[str]] = {}
    other: Dict[str, List[str]] = {}
    for r in runs:
        if QUALITY_KLD_MEAN not in r.data.metrics:
            continue
        p = r.data.params
        engine, name, given = p.get("format.engine", "?"), p.get("format.name", "?"), p.get("eval.logprobs")
        if given == "full":
            full.setdefault(engine, []).append(name)
        elif given and given.startswith("top-"):
            top.setdefault((engine, given[4:]), []).append(name)
        else:
            other.setdefault(engine, []).append(name)
    notes = []
    if full:
        notes.append(
            f"KLD on {', '.join(sorted(full))}: full-vocabulary log-probs, KLD over the baseline's top-{k} tokens + "
            "one bucket for the rest: a lower bound, exact when those tokens hold all the mass."
        )
    for (engine, n), names in sorted(top.items()):
        notes.append(
            f"KLD on {engine} ({', '.join(sorted(names))}): an approximation that can over-state KLD. "
            f"{engine} returns only its top-{n} prompt log-probs per position; the rest of each "
            f"distribution is rebuilt by spreading the remaining mass evenly, so a baseline top-{k} token "
            f"outside them gets far too little probability."
        )
    if other:
        notes.append(
            f"KLD on {', '.join(sorted(other))}: how this engine's log-probs are obtained is not described here."
        )
    return notes


def _source(p) -> str:
    """Where eval.add_bos came from, and which tokenizer made the ids when it is not the HF one."""
    text = f" ({p['eval.add_bos_source']})" if p.get("eval.add_bos_source") else ""
    if p.get("eval.tokenizer") == "llama_cpp":
        text += ", ids from llama.cpp's tokenizer of the GGUF (the HF one rebuilt from it disagreed)"
    return text


def tokenization_warnings(runs) -> List[str]:
    lines = []
    for r in runs:
        cpt = r.data.params.get("eval.chars_per_token")
        if r.data.params.get("eval.tokens_plausible") == "False":
            lines.append(
                f"WARNING {r.data.params.get('format.name', '?')}: the eval stream has {float(cpt):.2f} "
                f"characters per token ({r.data.params.get('eval.tokenizer', '?')} tokenizer): character-level "
                "tokenization is implausible for a real model; its perplexities mean little."
            )
    return lines


def memory_scope(runs) -> List[str]:
    """What the peak-memory numbers cover, from the param perf.memory_scope each benchmark logs."""
    scoped = [r.data.params for r in runs if r.data.params.get("perf.memory_scope")]
    if not scoped:
        return []
    offline = sorted(
        {p["perf.memory_scope"].removeprefix("fresh process: ") for p in scoped if p.get("benchmark.kind") != "serving"}
    )
    head = f"measured in a fresh process that loads only the engine ({'; '.join(offline)}); " if offline else ""
    return [f"Peak memory: {head}serving benchmarks: the server's process tree."]


def render(runs: List, uri: str, experiment: str, parent_run_id: str | None = None, reused: set = frozenset()) -> str:
    runs = sorted(runs, key=lambda r: r.info.start_time)
    p = next((r.data.params for r in runs if "eval.n_scored" in r.data.params), runs[0].data.params if runs else {})
    lines = [f"quant-runner: {len(runs)} job(s) on {p.get('model.name', '?')}", ""]
    lines.append(table(runs, uri))
    lines += uncertainty_notes(runs, uri)
    lines.append("")
    if p.get("model.origin"):
        lines.append(f"Model: {p['model.origin']}.")
    if p.get("model.weights_note"):
        lines.append(f"Note: {p['model.weights_note']}")
    if "eval.n_scored" in p:
        lines.append(
            f"Quality: token-level ppl over {p['eval.n_scored']} scored tokens of {p['eval.corpus']} "
            f"(ctx {p['eval.ctx_len']}, stride {p['eval.stride']}, BOS "
            f"{'prepended' if p['eval.add_bos'] == 'True' else 'not added'}{_source(p)}, "
            f"corpus sha256 {p['eval.corpus_sha256'][:12]}). KLD/top-1 vs baseline '{baseline_name(p)}' on the "
            f"{p.get('eval.baseline_engine', 'torch')} engine."
        )
        lines += kld_notes(runs, p["eval.kld_topk"])
    lines += tokenization_warnings(runs)
    if any(PERF_DECODE_TOK_S in r.data.metrics for r in runs):
        lines.append(
            f"Speed: {p['benchmark.prompt_tokens']}-token prompt + {p['benchmark.gen_tokens']} greedy tokens, one "
            "stream, "
            f"median of {p['benchmark.repeats']} after {p['benchmark.warmup']} warm-up, {p.get('hardware.threads')} "
            f"thread(s) on {p.get('hardware.name')}."
        )
    lines += memory_scope(runs)
    contents = [
        (r.data.params.get("format.name"), r.data.params["artifact.contents"])
        for r in runs
        if r.data.params.get("artifact.contents")
    ]
    if contents:
        lines.append(
            "What the files really store (share of parameters per tensor type; bpw above is the file's real average):"
        )
        lines += [f"  {name}: {text}" for name, text in contents]
    kernels = [
        f"{r.data.params.get('format.name')}: {r.data.params['engine.kernel']}"
        for r in runs
        if r.data.params.get("engine.kernel")
    ]
    if kernels:
        lines.append(f"Kernel that ran it (engine.kernel, read on the machine that ran the job): {'; '.join(kernels)}.")
    if reused:
        lines.append(
            f"Reused {len(reused)} finished run(s) of earlier sweeps (same job, resume=true): "
            + ", ".join(sorted(r.data.params.get("format.name", "?") for r in runs if r.info.run_id in reused))
        )
    for r in runs:
        if r.data.tags.get(SKIPPED_TAG):
            lines.append(f"SKIPPED {r.data.params.get('format.name', r.info.run_name)}: {r.data.tags[SKIPPED_TAG]}")
    failed = [r for r in runs if r.info.status != "FINISHED"]
    for r in failed:
        lines.append(
            f"FAILED {r.data.params.get('format.name', r.info.run_name)}: {r.data.tags.get('error', 'see error.txt')}"
        )
    where = f"MLflow: {uri}  experiment '{experiment}'"
    if parent_run_id:
        where += f"  sweep run {parent_run_id}"
    lines.append(where + "  (browse: make ui -> http://127.0.0.1:5000)")
    return "\n".join(lines)
