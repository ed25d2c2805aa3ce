"""Flips (Dutta et al., 2024) and the paired task comparison with the baseline, against hand-computed values on tiny
item lists, in the tasks stage's metrics and in the summary.

Intervals on 2 items are computable by hand: a resample holds item 1 twice, item 2 twice or one of each, and the
expanded percentile interval for n = 2 takes its tails at Φ(−√2 · t₀.₉₇₅,₁) ≈ 0, i.e. [smallest, largest] statistic.
"""

from types import SimpleNamespace as NS

import pytest

from runner.report.summary import render, table
from runner.stats.items import as_metrics, paired_items

BASE5 = [1, 1, 0, 0, 1]  # the baseline: items 1, 2 and 5 right
FMT5 = [1, 0, 1, 0, 0]  # the format: item 2 and 5 turn wrong, item 3 turns right


def test_five_items_hand_counted():
    p = paired_items(FMT5, BASE5, resamples=1000, seed=0)
    assert p.n == 5 and p.acc == pytest.approx(0.4) and p.baseline_acc == pytest.approx(0.6)
    assert p.correct_to_incorrect[0] == pytest.approx(2 / 5) and p.incorrect_to_correct[0] == pytest.approx(1 / 5)
    assert p.flips[0] == pytest.approx(3 / 5) and p.acc_delta[0] == pytest.approx(-1 / 5)
    assert p.retained[0] == pytest.approx(0.4 / 0.6)
    for value, (low, high) in (p.correct_to_incorrect, p.incorrect_to_correct, p.flips, p.acc_delta, p.retained):
        assert low <= value <= high


def test_two_items_intervals_by_hand():
    # the baseline gets item 1, the format item 2: one flip each way, every item flipped
    p = paired_items([0, 1], [1, 0], resamples=1000, seed=0)
    assert p.correct_to_incorrect == (0.5, pytest.approx((0.0, 1.0)))  # resamples: 1, 1/2 or 0 of the items
    assert p.incorrect_to_correct == (0.5, pytest.approx((0.0, 1.0)))
    assert p.flips == (1.0, pytest.approx((1.0, 1.0)))  # every resample flips every item
    assert p.acc_delta == (0.0, pytest.approx((-1.0, 1.0)))  # accuracy unmoved, every answer changed
    assert p.retained[0] == pytest.approx(1.0) and p.retained[1] is None  # a resample of item 2 alone: baseline 0
    # the baseline gets both, the format item 1: kept 2/2, 1/2 or 0/2 of the baseline's accuracy
    q = paired_items([1, 0], [1, 1], resamples=1000, seed=0)
    assert q.retained == (0.5, pytest.approx((0.0, 1.0))) and q.acc_delta == (-0.5, pytest.approx((-1.0, 0.0)))
    assert q.incorrect_to_correct == (0.0, pytest.approx((0.0, 0.0)))


def test_the_same_answers_have_no_flips_and_keep_all_the_accuracy():
    p = paired_items(BASE5, BASE5, resamples=1000, seed=0)
    assert p.flips == (0.0, (0.0, 0.0)) and p.retained == (1.0, (1.0, 1.0)) and p.acc_delta == (0.0, (0.0, 0.0))


def test_other_items_or_non_binary_answers_are_refused():
    with pytest.raises(ValueError, match="not the same items"):
        paired_items([1, 0], [1, 0, 1], 100, 0)
    with pytest.raises(ValueError, match="0 or 1"):
        paired_items([0.5, 1], [1, 0], 100, 0)


def test_metrics_carry_their_intervals_and_leave_out_an_undefined_ratio():
    m = as_metrics(paired_items([1, 1], [0, 0], 1000, 0), {"retained": "task/t/acc_retained", "flips": "task/t/flips"})
    assert m == {"task/t/flips": 1.0, "task/t/flips_ci_low": 1.0, "task/t/flips_ci_high": 1.0}  # baseline acc 0


def test_the_tasks_stage_logs_flips_and_paired_intervals_against_the_baselines_items(monkeypatch):
    from omegaconf import OmegaConf

    from runner.stages import tasks as stage
    from runner.tasks.run import TaskResult

    def fake_run_tasks(artifact, model, engine, tasks, limit, hardware, cache, add_bos):
        items = FMT5 if artifact == "mine" else BASE5
        return {t: TaskResult(t, sum(items) / 5, 0.2, 5, 1.0, 0, True, [float(i) for i in items]) for t in tasks}

    monkeypatch.setattr(stage, "run_tasks", fake_run_tasks)
    cfg = OmegaConf.create(
        {
            "eval": {
                "tasks": ["shakespeare_lastword"],
                "task_limit": 5,
                "add_bos": None,
                "bootstrap": {"resamples": 1000, "seed": 0},
            },
            "hardware": {"device": "cpu"},
        }
    )
    ctx = NS(cfg=cfg, artifact="mine", model=None, engine=NS(NAME="llama_cpp"), cache=None)
    ctx.baseline = (NS(engine="torch"), "base")
    m = stage.run(ctx).metrics
    t = "task/shakespeare_lastword/"
    assert m[t + "flips_c2i"] == pytest.approx(0.4) and m[t + "flips_i2c"] == pytest.approx(0.2)
    assert m[t + "flips"] == pytest.approx(0.6) and m[t + "acc_delta"] == pytest.approx(-0.2)
    assert m[t + "acc_retained"] == pytest.approx(2 / 3)
    for name in ("flips_c2i", "flips_i2c", "flips", "acc_delta", "acc_retained"):
        assert m[t + name + "_ci_low"] <= m[t + name] <= m[t + name + "_ci_high"], name


def _run(i, name, flips, c2i, i2c, delta, delta_ci):
    t = "task/shakespeare_nextline/"
    metrics = {
        "quality/kld_mean": 0.01 * i,
        t + "acc": 0.3,
        t + "acc_retained": 1.0 + delta / 0.3,
        t + "flips": flips[0],
        t + "flips_ci_low": flips[1],
        t + "flips_ci_high": flips[2],
        t + "flips_c2i": c2i[0],
        t + "flips_c2i_ci_low": c2i[1],
        t + "flips_c2i_ci_high": c2i[2],
        t + "flips_i2c": i2c[0],
        t + "flips_i2c_ci_low": i2c[1],
        t + "flips_i2c_ci_high": i2c[2],
        t + "acc_delta": delta,
        t + "acc_delta_ci_low": delta_ci[0],
        t + "acc_delta_ci_high": delta_ci[1],
    }
    params = {"format.name": name, "format.engine": "torch", "eval.baseline": "fp32"}
    params["eval.tasks_n_items"] = "shakespeare_nextline=150"
    return NS(
        info=NS(run_id=f"r{i}", status="FINISHED", start_time=i, run_name=name),
        data=NS(params=params, metrics=metrics, tags={}),
    )


def test_the_summary_shows_flips_beside_accuracy_and_notes_many_flips_under_a_flat_accuracy():
    runs = [
        # 12 % of the items flipped, 6 % each way: accuracy unmoved
        _run(1, "quiet", (0.12, 0.07, 0.17), (0.06, 0.03, 0.1), (0.06, 0.03, 0.1), 0.0, (-0.04, 0.04)),
        # as many flips, nearly all one way: the accuracy falls, which the accuracy column already shows
        _run(2, "falls", (0.12, 0.07, 0.17), (0.11, 0.06, 0.16), (0.01, 0.0, 0.03), -0.10, (-0.15, -0.05)),
        # few flips: nothing to note
        _run(3, "steady", (0.02, 0.0, 0.05), (0.01, 0.0, 0.03), (0.01, 0.0, 0.03), 0.0, (-0.02, 0.02)),
    ]
    header, _, quiet, falls, steady = table(runs).splitlines()
    assert "shakespeare_nextline c→i" in header and "shakespeare_nextline i→c" in header
    assert "6.0% ±3.5%" in quiet and "11.0% ±5.0%" in falls
    text = render(runs, "sqlite:///x.db", "quant-runner")
    notes = [line for line in text.splitlines() if line.startswith("Flips on")]
    assert notes == [
        "Flips on quiet shakespeare_nextline: 12.0% of the items flipped against the baseline (7.0%-17.0%) while its "
        "accuracy moved only +0.0% (interval -4.0% to +4.0%, contains 0): the same accuracy, other answers."
    ]
    assert "c→i / i→c: the share of items the baseline answers correctly and this format not" in text
