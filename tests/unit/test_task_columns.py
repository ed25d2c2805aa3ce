"""Task accuracy and the share of the baseline's accuracy kept, in the sweep summary and qrun-report's table
(hand-made runs: the numbers test the columns, they are not measurements)."""

from types import SimpleNamespace as NS

from runner.report.cli import markdown
from runner.report.data import Row
from runner.report.summary import render, table

Z = 1.959964


def _task(name, acc, stderr, kept):
    half = Z * stderr
    return {
        f"task/{name}/acc": acc,
        f"task/{name}/acc_ci_low": max(0.0, acc - half),
        f"task/{name}/acc_ci_high": acc + half,
        f"task/{name}/acc_stderr": stderr,
        f"task/{name}/acc_retained": kept,
        f"task/{name}/time_s": 12.0,
    }


def _run(i, name, metrics, engine="torch"):
    params = {
        "format.name": name,
        "format.engine": engine,
        "eval.baseline": "fp32",
        "eval.tasks_n_items": "shakespeare_lastword=150,shakespeare_nextline=150",
    }
    return NS(
        info=NS(run_id=f"r{i}", status="FINISHED", start_time=i, run_name=name),
        data=NS(params=params, metrics=metrics, tags={}),
    )


def _sweep():
    """Rows already in quality order (by KLD): fp16 then q4 then q2."""
    return [
        _run(
            0,
            "fp16",
            {
                "quality/kld_mean": 0.0001,
                **_task("shakespeare_lastword", 0.22, 0.034, 1.03),
                **_task("shakespeare_nextline", 0.32, 0.038, 0.97),
            },
        ),
        _run(
            1,
            "q4",
            {
                "quality/kld_mean": 0.02,
                **_task("shakespeare_lastword", 0.20, 0.033, 0.94),
                **_task("shakespeare_nextline", 0.31, 0.038, 0.94),
            },
            engine="llama_cpp",
        ),
        _run(
            2,
            "q2",
            {
                "quality/kld_mean": 0.60,
                **_task("shakespeare_lastword", 0.02, 0.011, 0.09),
                **_task("shakespeare_nextline", 0.27, 0.036, 0.82),
            },
            engine="llama_cpp",
        ),
    ]


def _by_column(text_table):
    header, _, *lines = text_table.splitlines()
    names = [h for h in header.split("  ") if h.strip()]
    return names, [dict(zip(names, [c.strip() for c in line.split("  ") if c.strip()])) for line in lines]


def test_summary_shows_each_tasks_accuracy_with_interval_ties_and_the_share_kept():
    names, (fp16, q4, q2) = _by_column(table(_sweep()))
    assert names[-5:] == ["lastword acc", "lastword kept", "nextline acc", "nextline kept", "status"]
    assert fp16["lastword acc"] == "22.0% ±6.7%" and fp16["lastword kept"] == "103.0%"
    assert q4["lastword acc"] == "≈20.0% ±6.5%"  # [13.5, 26.5] overlaps fp16's [15.3, 28.7]: not distinguishable
    # [0, 4.2] (clipped at 0: ± is half its width) vs [13.5, 26.5]: separated
    assert q2["lastword acc"] == "2.0% ±2.1%" and q2["lastword kept"] == "9.0%"
    assert q2["nextline acc"].startswith("≈") and "≈" not in q4["nextline kept"]  # "kept" has no interval: never ≈
    notes = render(_sweep(), "sqlite:///x.db", "quant-runner")
    assert (
        "Tasks: lm-eval accuracy on lastword = shakespeare_lastword (150 items), nextline = shakespeare_nextline "
        "(150 items)"
    ) in notes and "kept: acc ÷ the baseline's acc (eval.baseline=fp32) on the same items" in notes


def test_report_table_has_the_task_columns_and_a_sweep_without_tasks_keeps_its_columns():
    rows = [Row(r.info.run_id, "FINISHED", r.data.params, r.data.metrics) for r in _sweep()]
    header, _, fp16, q4, q2 = markdown(rows).splitlines()
    assert "| lastword acc | lastword kept | nextline acc | nextline kept | status |" in header
    assert "| 2.0% ±2.1% | 9.0% |" in q2 and "| ≈20.0% ±6.5% | 94.0% |" in q4
    plain = [_run(0, "fp16", {"quality/kld_mean": 0.0001}), _run(1, "q4", {"quality/kld_mean": 0.02})]
    assert " acc" not in table(plain).splitlines()[0] and "kept" not in table(plain).splitlines()[0]
    assert "Tasks:" not in render(plain, "sqlite:///x.db", "quant-runner")


def test_short_titles_only_drop_a_prefix_every_task_shares():
    from runner.report.columns import short_task_names

    assert short_task_names(["shakespeare_lastword", "shakespeare_nextline"]) == {
        "shakespeare_lastword": "lastword",
        "shakespeare_nextline": "nextline",
    }
    assert short_task_names(["shakespeare_lastword"]) == {"shakespeare_lastword": "shakespeare_lastword"}
    assert short_task_names(["arc_easy", "hellaswag"]) == {"arc_easy": "arc_easy", "hellaswag": "hellaswag"}
