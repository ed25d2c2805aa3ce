"""The one column table of the sweep summary and of qrun-report: metric columns come from the catalog.

A metric appears in a table when its declaration lists the table (runner/metrics.py, in declaration
order); this module adds only the columns that are not one metric: names, hardware, status, and the
report's memory column, and one accuracy and one "kept" column per lm-eval task some row has (with_tasks).
"""

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from runner import metrics as M
from runner.report import floor, ties
from runner.report.data import Row
from runner.report.measures import on_gpu


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[Row], object]
    render: Callable[[object], str]
    left: bool = False  # text: left-aligned in the summary
    metric: Optional[str] = None
    optional: bool = False  # the summary drops it when no row has a value

    def cell(self, row: Row) -> str:
        value = self.get(row)
        if value is None:
            return "-"
        text = self.render(value)
        return with_uncertainty(M.get(self.metric), row, text) if self.metric else text


def with_uncertainty(m: M.Metric, row: Row, text: str) -> str:
    """A metric's cell with what is known of its uncertainty: "40.70 ±0.52" (half the width of its 95 % interval),
    "~81.3?" (a speed that varied more than benchmark.noisy_cv over the repeats)."""
    interval = ties.ci(row, m.name)
    if interval:
        text += " ±" + m.format((interval[1] - interval[0]) / 2).lstrip("+")
    if ties.noisy(row, m.name):
        text = f"~{text}?"
    return text


# "≈" (indistinguishable from the row above) on these and on task accuracies; not quality/ppl: its interval is over
# the text, not paired
TIE_MARKED = (M.QUALITY_PPL_DELTA_PCT, M.QUALITY_KLD_MEAN, M.QUALITY_TOP1_AGREE)
TASK_ACC = re.compile(r"^task/(.+)/acc$")


def tie_marked(metric: Optional[str]) -> bool:
    return metric in TIE_MARKED or bool(metric and TASK_ACC.match(metric))


def cells(columns: List["Column"], rows: List[Row]) -> List[List[str]]:
    """The table's cells, rows in the given order; a quality cell starts with "≈" when it is not distinguishable
    from the row above's (runner/report/ties.py)."""
    out = []
    for i, row in enumerate(rows):
        out.append(
            [
                ("≈" if tie_marked(c.metric) and i and ties.indistinguishable(rows[i - 1], row, c.metric) else "")
                + c.cell(row)
                for c in columns
            ]
        )
    return out


def _text(get: Callable[[Row], object], header: str) -> Column:
    return Column(header, get, str, left=True)


def _param(name: str, header: str) -> Column:
    return _text(lambda r: r.params.get(name), header)


def peak_memory(row: Row) -> Optional[float]:
    """The measured peak a memory budget is held against: peak VRAM on a GPU run (none if unmeasured, never host
    RSS), else a process tree's PSS, else RSS (the budget takes the larger of it and memory/need_bytes)."""
    if on_gpu(row):
        return row.get(M.PERF_PEAK_VRAM_BYTES)
    return row.get(M.PERF_PEAK_PSS_BYTES) or row.get(M.PERF_PEAK_RSS_BYTES)


def metric_column(m: M.Metric) -> Column:
    # serving columns only when a serving benchmark ran, so an offline sweep's table keeps its columns
    return Column(m.header, lambda r: r.get(m.name), m.format, metric=m.name, optional=m.producer == M.SERVING)


def _report_metric_column(m: M.Metric) -> Column:
    if m.name == M.PERF_PEAK_RSS_BYTES:
        return Column("peak mem MB", peak_memory, m.format, metric=m.name)
    return metric_column(m)


STATUS = Column("status", lambda r: r.status, str)
SUMMARY: List[Column] = (
    [_param("format.name", "format"), _param("format.backend", "backend"), _param("format.engine", "engine")]
    + [metric_column(m) for m in M.in_table("summary")]
    + [STATUS]
)
REPORT: List[Column] = (
    [_text(lambda r: r.label, "format"), _param("hardware.name", "hardware")]
    + [_report_metric_column(m) for m in M.in_table("report")]
    + [STATUS]
)


def used(columns: List[Column], rows: List[Row], every: bool = False) -> List[Column]:
    """The columns to show: those with a value in some row (every=True: all but the optional empty ones)."""
    return [c for c in columns if (every and not c.optional) or any(c.get(r) is not None for r in rows)]


def task_names(rows: List[Row]) -> List[str]:
    """The tasks some row has an accuracy for (task/<name>/acc), by name."""
    return sorted({match.group(1) for r in rows for name in r.metrics for match in [TASK_ACC.match(name)] if match})


def short_task_names(tasks: List[str]) -> Dict[str, str]:
    """Column titles: without the "<word>_" prefix that every task shares when there are several
    (shakespeare_lastword, shakespeare_nextline -> lastword, nextline); full names otherwise."""
    prefix = tasks[0].split("_")[0] + "_" if tasks else ""
    if len(tasks) < 2 or not all(t.startswith(prefix) and len(t) > len(prefix) for t in tasks):
        prefix = ""
    return {t: t[len(prefix) :] for t in tasks}


def task_columns(rows: List[Row]) -> List[Column]:
    """Per task in the rows: its accuracy (± half its 95 % interval, "≈" like the other quality columns), the share
    of the eval.baseline's accuracy it keeps (task/<name>/acc_retained) and the flips against the baseline's answers
    on the same items: correct→incorrect and incorrect→correct (each ± half its paired interval over the items).
    None without task metrics."""
    columns = []
    for task, short in short_task_names(task_names(rows)).items():
        flips = [M.task_metric(task, M.TASK_FLIPS_C2I), M.task_metric(task, M.TASK_FLIPS_I2C)]
        for name, title in (
            (M.task_metric(task, "acc"), f"{short} acc"),
            (M.task_metric(task, "acc_retained"), f"{short} kept"),
            (flips[0], f"{short} c→i"),
            (flips[1], f"{short} i→c"),
        ):
            if name in flips and not any(r.get(name) is not None for r in rows):
                continue  # runs from before the flips were counted
            m = M.get(name)
            columns.append(Column(title, lambda r, name=name: r.get(name), m.format, metric=name))
    return columns


def with_floor(columns: List[Column], rows: List[Row]) -> List[Column]:
    """columns plus "vs floor" after the quality columns where a run names a noise floor (runner/report/floor.py):
    baseline, floor, noise (within engine noise) or the paired difference to the floor; unchanged otherwise."""
    if floor.floor_name(rows) is None:
        return columns
    row = floor.floor_row(rows)
    column = Column("vs floor", lambda r: floor.cell(r, row), str)
    quality = [i for i, c in enumerate(columns) if c.metric and c.metric.startswith("quality/")]
    at = quality[-1] + 1 if quality else (columns.index(STATUS) if STATUS in columns else len(columns))
    return columns[:at] + [column] + columns[at:]


def with_tasks(columns: List[Column], rows: List[Row]) -> List[Column]:
    """columns plus the rows' task columns, before the status column: unchanged when no row has a task."""
    extra = task_columns(rows)
    at = columns.index(STATUS) if STATUS in columns else len(columns)
    return columns[:at] + extra + columns[at:]
