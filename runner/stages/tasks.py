"""The tasks stage: lm-eval task accuracy (eval.tasks) of the job's artifact on the job's engine, and of the
eval.baseline preset on its own engine, compared item by item.

Logs task/<name>/acc (+ _ci_low/_ci_high: acc +- 1.96 stderr, clipped to [0, 1]), task/<name>/acc_stderr,
task/<name>/time_s (the compute time of the run that finished the task), and against the baseline's answers on the
same items (runner/stats/items.py, paired bootstrap intervals over the items with eval.bootstrap's settings):
task/<name>/acc_retained (acc ÷ the baseline's), task/<name>/acc_delta (acc − the baseline's) and the flips,
task/<name>/flips_c2i (correct→incorrect), flips_i2c (incorrect→correct) and flips (both).
Nothing to do when eval.tasks is empty (the default).
"""

import time

from runner.config.checks import bootstrap_settings
from runner.metrics import (
    TASK_ACC_DELTA,
    TASK_FLIPS,
    TASK_FLIPS_C2I,
    TASK_FLIPS_I2C,
    TIME_TASKS_S,
    ci_names,
    task_metric,
)
from runner.stages import StageContext, StageResult
from runner.stats.items import as_metrics, paired_items
from runner.system.packages import dist_versions
from runner.tasks.registry import check_tasks
from runner.tasks.run import run_tasks

Z95 = 1.959964
PAIRED = {  # runner/stats/items.py PairedItems field -> task/<name>/<stat>
    "retained": "acc_retained",
    "acc_delta": TASK_ACC_DELTA,
    "flips": TASK_FLIPS,
    "correct_to_incorrect": TASK_FLIPS_C2I,
    "incorrect_to_correct": TASK_FLIPS_I2C,
}


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg
    tasks = list(cfg.eval.tasks or [])
    if not tasks:
        return StageResult()
    check_tasks(tasks, cfg.eval.task_limit)
    start = time.perf_counter()
    limit, add_bos = cfg.eval.task_limit, cfg.eval.add_bos
    mine = run_tasks(ctx.artifact, ctx.model, ctx.engine.NAME, tasks, limit, cfg.hardware, ctx.cache, add_bos)
    baseline_cfg, baseline_artifact = ctx.baseline
    base = run_tasks(baseline_artifact, ctx.model, baseline_cfg.engine, tasks, limit, cfg.hardware, ctx.cache, add_bos)
    resamples, seed = bootstrap_settings(cfg.eval)
    metrics, table = {}, {}
    for task, r in mine.items():
        half = Z95 * r.acc_stderr
        b = base[task].acc
        low, high = ci_names(task_metric(task, "acc"))
        metrics.update(
            {
                task_metric(task, "acc"): r.acc,
                low: max(0.0, r.acc - half),
                high: min(1.0, r.acc + half),
                task_metric(task, "acc_stderr"): r.acc_stderr,
                task_metric(task, "time_s"): r.seconds,
            }
        )
        paired = paired_items(r.items, base[task].items, resamples, seed)  # the same items: the same limit
        metrics.update(as_metrics(paired, {field: task_metric(task, stat) for field, stat in PAIRED.items()}))
        table[task] = {
            "acc": r.acc,
            "acc_stderr": r.acc_stderr,
            "n": r.n,
            "baseline_acc": b,
            "retained": paired.retained,
            "acc_delta": paired.acc_delta,
            "flips_c2i": paired.correct_to_incorrect,
            "flips_i2c": paired.incorrect_to_correct,
            "seconds": r.seconds,
            "cache_hit": r.cache_hit,
            "resumed": r.resumed,
        }
    metrics[TIME_TASKS_S] = time.perf_counter() - start
    params = {
        "eval.tasks_n_items": ",".join(f"{t}={r.n}" for t, r in mine.items()),
        "eval.tasks_lm_eval": dist_versions("lm-eval"),
    }
    return StageResult(metrics=metrics, params=params, summary={"tasks": table})
