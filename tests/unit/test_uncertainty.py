"""95 % paired bootstrap intervals on the quality metrics, speed spread over repeats, "≈" and noisy flags."""

from types import SimpleNamespace as NS

import numpy as np
import pytest

from helpers import ROOT, TINY_ARGS, mlflow_runs
from runner import metrics as M
from runner.config.checks import bootstrap_settings
from runner.errors import UserError
from runner.quality.reference import Reference
from runner.quality.stream import TokenStream
from runner.report import ties
from runner.report.cli import markdown
from runner.report.columns import SUMMARY, cells
from runner.report.data import Row, rows_of
from runner.report.summary import render, table
from runner.stages.benchmark import speed_spread
from runner.stages.evaluate import evaluate
from runner.stats.bootstrap import WindowSums, quality_intervals, resample_counts

CI = ("quality/ppl", "quality/ppl_delta_pct", "quality/kld_mean", "quality/top1_agree", "quality/ppl_ratio")


def sums(nll, tokens, kld=None, agree=None, base=None):
    tokens = np.asarray(tokens, dtype=float)
    nll = np.asarray(nll, dtype=float)
    return WindowSums(
        nll,
        tokens,
        np.zeros_like(nll) if kld is None else np.asarray(kld, float),
        tokens.copy() if agree is None else np.asarray(agree, float),
        nll.copy() if base is None else np.asarray(base, float),
    )


def bounds(ci, name):
    return ci[name + "_ci_low"], ci[name + "_ci_high"]


def test_constant_windows_give_a_zero_width_interval_at_the_value():
    ci = quality_intervals(sums(nll=[2.0 * 50] * 20, tokens=[50] * 20, kld=[0.01 * 50] * 20, agree=[40] * 20), 500, 0)
    assert set(ci) == {n + s for n in CI for s in M.CI_SUFFIXES} and all(M.is_declared(n) for n in ci)
    assert bounds(ci, "quality/ppl") == pytest.approx((np.exp(2.0), np.exp(2.0)), rel=1e-12)
    assert bounds(ci, "quality/kld_mean") == pytest.approx((0.01, 0.01), rel=1e-12)
    assert bounds(ci, "quality/top1_agree") == pytest.approx((0.8, 0.8), rel=1e-12)


def test_two_windows_percentile_interval_is_the_two_window_means():
    """Resamples of 2 windows: both the first (1/4), one of each (1/2), both the second (1/4): the 2.5th and 97.5th
    percentiles are exactly the two windows' own values."""
    ci = quality_intervals(sums(nll=[1.0 * 10, 3.0 * 10], tokens=[10, 10], agree=[2, 9]), 1000, 0)
    assert bounds(ci, "quality/ppl") == pytest.approx((np.exp(1.0), np.exp(3.0)), rel=1e-12)
    assert bounds(ci, "quality/top1_agree") == pytest.approx((0.2, 0.9), rel=1e-12)


def test_many_windows_match_the_normal_interval_of_a_proportion():
    """One token per window, 30 % agreeing: the percentile interval approaches p ± 1.96 sqrt(p (1 - p) / n)."""
    n, p = 400, 0.3
    agree = (np.arange(n) < p * n).astype(float)
    ci = quality_intervals(sums(nll=np.ones(n), tokens=np.ones(n), agree=agree), 4000, 0)
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    assert bounds(ci, "quality/top1_agree") == pytest.approx((p - half, p + half), abs=0.006)


def test_paired_delta_of_identical_streams_is_exactly_zero_and_pairing_narrows_it():
    rng = np.random.default_rng(1)
    base = rng.uniform(2.0, 6.0, 64) * 100  # windows of very different difficulty
    same = quality_intervals(sums(nll=base, tokens=[100] * 64, base=base), 1000, 0)
    assert bounds(same, "quality/ppl_delta_pct") == (0.0, 0.0)
    low, high = bounds(same, "quality/ppl")
    assert high - low > 1.0  # the text's difficulty spreads ppl, not the paired difference
    shifted = quality_intervals(sums(nll=base + 0.01 * 100, tokens=[100] * 64, base=base), 1000, 0)  # +0.01 nats/token
    assert bounds(shifted, "quality/ppl_delta_pct") == pytest.approx((100 * np.expm1(0.01),) * 2, rel=1e-9)


def test_seed_makes_it_deterministic_and_resamples_are_one_index_matrix():
    w = sums(nll=np.random.default_rng(2).uniform(1, 5, 30) * 10, tokens=[10] * 30, kld=np.linspace(0, 1, 30))
    assert quality_intervals(w, 300, 7) == quality_intervals(w, 300, 7) != quality_intervals(w, 300, 8)
    counts = resample_counts(30, 300, 7)
    assert counts.shape == (300, 30) and (counts.sum(axis=1) == 30).all()
    assert quality_intervals(w, 0, 0) == {} and quality_intervals(sums([1.0], [1]), 100, 0) == {}  # off, one window


def test_window_sums_follow_the_scoring_windows():
    w = WindowSums.from_tokens(
        [2, 3], nll=[1, 2, 3, 4, 5], kld=[0, 0, 1, 1, 1], agree=[1, 0, 1, 1, 1], baseline_nll=[1] * 5
    )
    assert (
        w.nll.tolist() == [3, 12]
        and w.tokens.tolist() == [2, 3]
        and w.kld.tolist() == [0, 3]
        and w.agree.tolist() == [1, 3]
    )
    with pytest.raises(ValueError, match="not the same windows"):
        WindowSums.from_tokens([2, 2], nll=[1] * 5, kld=[0] * 5, agree=[1] * 5, baseline_nll=[1] * 5)


def test_evaluate_of_the_baseline_itself_logs_a_zero_delta_interval_at_run_time():
    """evaluate()'s own path (the baseline's reference row): no model needed, intervals from the stream's windows."""
    ids = np.arange(1000, dtype=np.int32) % 97
    stream = TokenStream(ids, None, "sha", "hand-made", "key", add_bos=False)
    nll = np.random.default_rng(3).uniform(1, 8, 999)
    ref = Reference(nll, np.zeros((999, 4), np.int32), np.zeros((999, 4), np.float32), "fp32", "base", "torch")
    eval_cfg = NS(ctx_len=100, stride=50, add_bos=False, bootstrap=NS(resamples=500, seed=0))
    q, _ = evaluate(NS(manifest={"key": "base"}), None, eval_cfg, stream, ref, None, "torch")
    M.check_declared(q)
    assert (q["quality/ppl_delta_pct_ci_low"], q["quality/ppl_delta_pct_ci_high"]) == (0.0, 0.0)
    assert q["quality/ppl_ci_low"] < q["quality/ppl"] < q["quality/ppl_ci_high"]
    assert q["quality/top1_agree_ci_low"] == q["quality/top1_agree_ci_high"] == 1.0 and q["time/bootstrap_s"] >= 0


def test_bad_bootstrap_settings_name_the_key():
    for bad, key in (
        (NS(resamples=-1, seed=0), "eval.bootstrap.resamples"),
        (NS(resamples=10, seed=-3), "eval.bootstrap.seed"),
    ):
        with pytest.raises(UserError) as e:
            bootstrap_settings(NS(bootstrap=bad))
        assert e.value.key == key
    assert bootstrap_settings(NS()) == (1000, 0)


def test_speed_spread_over_repeats():
    spread = speed_spread(np.array([100.0, 100.0, 100.0]), np.array([80.0, 100.0, 120.0]))
    assert spread["perf/prefill_tok_s_cv"] == 0.0 and spread["perf/prefill_tok_s_min"] == 100.0
    assert (spread["perf/decode_tok_s_min"], spread["perf/decode_tok_s_max"]) == (80.0, 120.0)
    assert spread["perf/decode_tok_s_cv"] == pytest.approx(0.2)  # sample std 20 / mean 100
    M.check_declared(spread)
    assert speed_spread(np.array([5.0]), np.array([5.0])) == {}  # one repeat: no spread


def _run(i, name, metrics, params=None):
    params = {
        "format.name": name,
        "format.engine": "torch",
        "eval.bootstrap.windows": "32",
        "benchmark.prompt_tokens": "64",
        "benchmark.gen_tokens": "16",
        "benchmark.repeats": "5",
        "benchmark.warmup": "1",
        "eval.bootstrap.resamples": "1000",
        "eval.bootstrap.seed": "0",
        **(params or {}),
    }
    return NS(
        info=NS(run_id=f"r{i}", status="FINISHED", start_time=i, run_name=name),
        data=NS(params=params, metrics=metrics, tags={}),
    )


def _quality(kld, kld_ci, delta, delta_ci):
    return {
        "quality/kld_mean": kld,
        "quality/kld_mean_ci_low": kld_ci[0],
        "quality/kld_mean_ci_high": kld_ci[1],
        "quality/ppl_delta_pct": delta,
        "quality/ppl_delta_pct_ci_low": delta_ci[0],
        "quality/ppl_delta_pct_ci_high": delta_ci[1],
    }


def test_overlapping_intervals_are_marked_approx_in_the_summary():
    runs = [
        _run(0, "q4", _quality(0.0210, (0.0190, 0.0230), 1.90, (1.50, 2.30))),  # logged first, worse: sorted below
        _run(1, "q8", _quality(0.0012, (0.0010, 0.0014), 0.10, (0.02, 0.18))),
        _run(2, "q6", _quality(0.0013, (0.0011, 0.0016), 0.40, (0.30, 0.50))),
    ]
    header, _, q8, q6, q4 = table(runs).splitlines()
    assert [line.split()[0] for line in (q8, q6, q4)] == ["q8", "q6", "q4"]  # quality order
    kld_at = header.index("KLD")
    assert "≈0.0013 ±0.0003" in q6 and "0.0210 ±0.0020" in q4 and "≈" not in q4 and "≈" not in q8
    assert "+0.40 ±0.10" in q6 and "≈+0.40" not in q6  # Δppl intervals [0.02, 0.18] and [0.30, 0.50]: distinguishable
    assert q6.index("≈") < kld_at + len("KLD") + 8
    text = render(runs, "sqlite:///x.db", "quant-runner")
    assert "their intervals overlap" in text and "32 scoring windows, 1000 resamples, seed 0" in text
    assert "paired bootstrap interval of the difference" not in text  # no window sums here: the overlap rule
    rows = [Row(r.info.run_id, "FINISHED", r.data.params, r.data.metrics) for r in runs]
    assert ties.indistinguishable(rows[1], rows[2], "quality/kld_mean")
    assert not ties.indistinguishable(rows[1], rows[2], "quality/ppl_delta_pct")
    assert not ties.indistinguishable(rows[1], rows[2], "quality/top1_agree")  # no interval: no evidence of a tie
    report = markdown(rows).splitlines()  # qrun-report's table: the same order and marks
    assert [line.split("|")[1].strip() for line in report[2:]] == ["q8", "q6", "q4"]
    assert "≈0.0013" in report[3] and "≈" not in report[2] + report[4]


def test_noisy_speed_is_flagged_not_printed_as_a_fact():
    speed = {
        "perf/decode_tok_s": 81.3,
        "perf/decode_tok_s_min": 60.2,
        "perf/decode_tok_s_max": 95.1,
        "perf/decode_tok_s_cv": 0.14,
        "perf/prefill_tok_s": 400.0,
        "perf/prefill_tok_s_cv": 0.02,
    }
    noisy = _run(0, "int8", speed, {"benchmark.noisy_cv": "0.1"})
    quiet = _run(1, "fp32", {**speed, "perf/decode_tok_s_cv": 0.05}, {"benchmark.noisy_cv": "0.1"})
    header, _, *lines = table([noisy, quiet]).splitlines()
    by_name = {line.split()[0]: line for line in lines}
    assert "~81.3?" in by_name["int8"] and "~" not in by_name["fp32"] and " 81.3 " in by_name["fp32"]
    assert "~400" not in by_name["int8"]  # prefill's CV is below the threshold
    text = render([noisy, quiet], "sqlite:///x.db", "quant-runner")
    assert "benchmark.noisy_cv=10 %" in text and "int8 decode t/s: 81.3 (range 60.2-95.1, CV 14 %)" in text
    assert not ties.noisy(Row("r", "FINISHED", {"benchmark.noisy_cv": "0.2"}, speed), "perf/decode_tok_s")
    a, b = (
        Row(n, "FINISHED", {}, {"perf/decode_tok_s_min": lo, "perf/decode_tok_s_max": hi})
        for n, lo, hi in (("a", 60.0, 95.0), ("b", 96.0, 99.0))
    )
    assert not ties.indistinguishable(a, b, "perf/decode_tok_s")
    assert ties.indistinguishable(
        a, Row("c", "FINISHED", {}, {"perf/decode_tok_s_min": 90.0, "perf/decode_tok_s_max": 99.0}), "perf/decode_tok_s"
    )


def test_cells_without_intervals_are_unchanged():
    row = Row("r", "FINISHED", {"format.name": "x"}, {"quality/kld_mean": 0.0123, "perf/decode_tok_s": 50.0})
    kld = next(c for c in SUMMARY if c.metric == "quality/kld_mean")
    assert kld.cell(row) == "0.0123" and cells([kld], [row, row]) == [["0.0123"], ["0.0123"]]


def test_a_real_job_logs_intervals_spread_and_protocol_params(tmp_path, cache_dir, tiny_model_dir):
    """The tiny model through job.run: evaluate logs the intervals, benchmark the spread over repeats."""
    from hydra import compose, initialize_config_dir

    from runner import job
    from runner.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "format=fp16",
                "model=hf",
                f"model.id={tiny_model_dir}",
                *TINY_ARGS,
                "eval.n_tokens=512",
                "eval.bootstrap.resamples=200",
                f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                f"cache.dir={cache_dir}",
            ],
        )
    (tmp_path / "job").mkdir()
    result = job.run(cfg, tmp_path / "job", None, [])
    assert result["status"] == "FINISHED", result
    _, (run,) = mlflow_runs(tmp_path / "mlflow.db")
    m, p = run.data.metrics, run.data.params
    for name in CI:
        assert m[name + "_ci_low"] <= m[name] <= m[name + "_ci_high"], name
    assert m["quality/ppl_delta_pct_ci_low"] < m["quality/ppl_delta_pct_ci_high"]  # fp16 is not the fp32 baseline
    assert (
        p["eval.bootstrap.resamples"] == "200" and p["eval.bootstrap.seed"] == "0" and p["benchmark.noisy_cv"] == "0.1"
    )
    assert p["eval.bootstrap.windows"] == "4"  # 512 tokens in windows of 128
    assert {"perf/decode_tok_s_min", "perf/decode_tok_s_max", "perf/decode_tok_s_cv", "perf/prefill_tok_s_cv"} <= set(m)
    assert m["perf/decode_tok_s_min"] <= m["perf/decode_tok_s_max"]
    assert m["time/bootstrap_s"] < 0.05 * m["time/evaluate_s"]
    assert "±" in render([run], "sqlite:///x.db", "quant-runner")
    for name in ("perf/decode_tok_s", "perf/throughput_tok_s", "perf/latency_s_p50"):  # t intervals over repeats
        assert m[name + "_ci_low"] <= m[name + "_ci_high"], name
    (row,) = rows_of([run], f"sqlite:///{tmp_path / 'mlflow.db'}")  # the window sums come back from the store
    sums = row.window_sums
    assert sums is not None and len(sums.tokens) == 4 and sums.tokens.sum() == float(p["eval.n_scored"])
    assert sums.protocol["eval.baseline"] == p["eval.baseline"] and sums.resamples == 200
    assert ties.difference(row, row, "quality/kld_mean") == (0.0, 0.0, 0.0, ties.PAIRED)
