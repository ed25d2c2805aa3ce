"""The noise floor row: a format whose paired difference to the floor (the baseline's weights in another dtype) contains
0 is "within engine noise" in the summary and the decision; one whose difference excludes 0 is not.

Hand-made window sums (2 windows of 100 tokens): with 2 windows a resample holds window 1 twice, window 2 twice or
one of each, and the expanded percentile interval for n = 2 takes its tails at Φ(−√2 · t₀.₉₇₅,₁) ≈ 0, so the
interval of a difference is [the smaller, the larger] of the two windows' differences -- computable by hand.
"""

from types import SimpleNamespace as NS

import numpy as np
import pytest

from helpers import compose
from runner.config.checks import check_noise_floor
from runner.errors import UserError
from runner.paths import WINDOW_SUMS_ARTIFACT
from runner.report import floor
from runner.report.data import Row
from runner.report.decision_text import decision_text, without_scenario_text
from runner.report.recommend import Constraints, recommend
from runner.report.summary import table, uncertainty_notes
from runner.stats.bootstrap import WindowSums, quality_intervals

KLD = "quality/kld_mean"
PROTOCOL = {"eval.corpus": "shakespeare", "eval.ctx_len": "100", "eval.baseline_artifact": "base"}
TOKENS = 100.0
# per-window KLD sums (nats summed over the window's 100 tokens); KLD means per window are these / 100
FLOOR = [1.0, 3.0]  # fp16: 0.01 and 0.03
WITHIN = [2.0, 2.0]  # differences to the floor +0.01, -0.01: the interval [-0.01, +0.01] contains 0
ABOVE = [4.0, 5.0]  # differences +0.03, +0.02: [0.02, 0.03], point +0.025 -- excludes 0
BELOW = [0.5, 1.0]  # differences -0.005, -0.02: [-0.02, -0.005], below the floor: its loss is smaller still


def sums(kld):
    tok = np.full(2, TOKENS)
    nll = np.full(2, 3.0 * TOKENS)
    return WindowSums(nll, tok, np.asarray(kld, dtype=float), 0.9 * tok, nll.copy(), dict(PROTOCOL), 1000, 0)


def run(tmp_path, name, kld, noise_floor="fp16", **params):
    root = tmp_path / name
    (root / WINDOW_SUMS_ARTIFACT).parent.mkdir(parents=True)
    w = sums(kld)
    (root / WINDOW_SUMS_ARTIFACT).write_text(w.to_json())
    ci = quality_intervals(w, w.resamples, w.seed)
    metrics = {KLD: float(w.kld.sum() / w.tokens.sum()), KLD + "_ci_low": ci[KLD + "_ci_low"]}
    metrics[KLD + "_ci_high"] = ci[KLD + "_ci_high"]
    p = {"format.name": name, "format.engine": "torch", "eval.baseline": "fp32", "eval.noise_floor": noise_floor}
    return Row(name, "FINISHED", {**p, **params}, metrics, artifact_uri=root.as_uri())


def as_runs(rows):
    """The rows as the MLflow runs the sweep summary is given (its artifact root in info, as MLflow's Run has it)."""
    return [
        NS(
            info=NS(run_id=r.run_id, status=r.status, start_time=i, run_name=r.format, artifact_uri=r.artifact_uri),
            data=NS(params=r.params, metrics=r.metrics, tags={}),
        )
        for i, r in enumerate(rows)
    ]


@pytest.fixture
def rows(tmp_path):
    return [
        run(tmp_path, "fp32", [0.0, 0.0]),
        run(tmp_path, "fp16", FLOOR),
        run(tmp_path, "within", WITHIN),
        run(tmp_path, "above", ABOVE),
        run(tmp_path, "below", BELOW),
    ]


def test_a_format_whose_difference_to_the_floor_contains_0_is_within_noise_and_one_that_excludes_it_is_not(rows):
    base, fp16, within, above, below = rows
    assert floor.floor_row(rows) is fp16
    name, point, low, high = floor.versus(within, fp16)
    assert name == KLD and point == pytest.approx(0.0) and (low, high) == pytest.approx((-0.01, 0.01))
    assert floor.versus(above, fp16)[1:] == pytest.approx((0.025, 0.02, 0.03))
    assert floor.versus(below, fp16)[1:] == pytest.approx((-0.0125, -0.02, -0.005))
    assert floor.within_noise(within, fp16) and floor.within_noise(below, fp16)
    assert not floor.within_noise(above, fp16)
    assert [floor.cell(r, fp16) for r in rows] == ["baseline", "floor", "noise", "+0.0250 ±0.0050", "noise"]


def test_the_summary_shows_the_floor_row_and_says_which_formats_are_within_engine_noise(rows):
    header, _, *lines = table(as_runs(rows)).splitlines()
    assert "vs floor" in header
    by_format = {line.split()[0]: line for line in lines}
    assert "  floor  " in by_format["fp16"] and "  baseline  " in by_format["fp32"]
    assert "  noise  " in by_format["within"] and "  noise  " in by_format["below"]
    assert "+0.0250 ±0.0050" in by_format["above"] and "noise" not in by_format["above"]
    [note] = [n for n in uncertainty_notes(as_runs(rows)) if n.startswith("vs floor:")]
    assert "noise floor fp16" in note and "Within engine noise: within, below." in note


def test_the_decision_marks_formats_within_engine_noise(rows):
    c = Constraints()
    text = decision_text(recommend(rows, c, "quality"), c, rows)
    assert "## Noise floor" in text
    assert (
        "Within engine noise (the paired 95 % interval of the difference to it contains 0 or lies below it): " in text
    )
    assert "within, below." in text and "above (within engine noise)" not in text
    assert "Runner-up: below (within engine noise)" in text  # KLD 0.0075: the closest to fp32 after fp32 itself
    assert "## Noise floor" in without_scenario_text(rows)


def test_without_a_floor_nothing_changes_and_a_floor_that_did_not_run_is_said_not_silently_dropped(tmp_path):
    rows = [run(tmp_path, "fp32", [0.0, 0.0], noise_floor=None), run(tmp_path, "above", ABOVE, noise_floor=None)]
    runs = as_runs(rows)
    assert "vs floor" not in table(runs) and not any(
        n.startswith(("vs floor", "Noise")) for n in uncertainty_notes(runs)
    )
    assert "Noise floor" not in decision_text(recommend(rows, Constraints(), "quality"), Constraints(), rows)
    for r in rows:
        r.params["eval.noise_floor"] = "bf16"
    assert [n for n in uncertainty_notes(as_runs(rows)) if n.startswith("Noise floor")] == [
        "Noise floor: eval.noise_floor=bf16 is not a finished run of this sweep, so no format is compared with it: "
        "add format=bf16 to the sweep."
    ]
    assert "eval.noise_floor=bf16 did not run in this sweep" in without_scenario_text(rows)


def test_make_runs_sweep_names_fp16_its_floor_and_a_floor_must_be_another_preset_than_the_baseline():
    assert compose(["experiment=cpu_default"]).eval.noise_floor == "fp16"
    assert compose([]).eval.noise_floor is None
    with pytest.raises(UserError) as e:
        check_noise_floor(compose(["eval.noise_floor=fp32"]).eval)
    assert e.value.key == "eval.noise_floor" and "baseline itself" in e.value.problem and "fp16" in e.value.fix
    with pytest.raises(UserError) as e:
        check_noise_floor(compose(["eval.noise_floor=fp17"]).eval)
    assert e.value.key == "eval.noise_floor" and "no format preset 'fp17'" in e.value.problem
