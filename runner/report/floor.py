"""The noise floor: how far the baseline's own weights move when only the engine or dtype changes, and which
formats lose no more than that.

`eval.noise_floor` names a format preset that holds the baseline's weights in another dtype or on another engine
(fp16 or bf16 against the fp32 baseline on torch, gguf_f16 on llama.cpp). Its run is scored like every format, on
the same tokens against the same baseline, so its KLD and Δppl are what the change of engine or dtype alone costs.
A format whose paired difference to the floor (runner/report/ties.py difference: the same windows, one resample of
them for both) contains 0 -- or lies wholly below it -- is "within engine noise": its loss is not told apart from
what running the unquantized weights elsewhere costs. The deciding quality metric is KLD, else Δppl
(recommend.py's).
"""

from typing import List, Optional, Tuple

from runner import metrics as M
from runner.report import ties
from runner.report.data import Row, baseline_name

KEY = "eval.noise_floor"  # the param every job logs (runner/config/schema.py EvalConfig.noise_floor)
BASELINE, FLOOR, NOISE = "baseline", "floor", "noise"
WITHIN = "within engine noise"


def floor_name(rows: List[Row]) -> Optional[str]:
    """The format preset the runs name as their noise floor (the latest run's, where a reused older run named
    another: the key is not part of a job's identity); None where no run names one."""
    return next((r.params[KEY] for r in reversed(rows) if r.params.get(KEY) not in (None, "", "None")), None)


def floor_row(rows: List[Row]) -> Optional[Row]:
    """The finished run of the floor's format (the first with window sums, else the first); None if not in rows."""
    name = floor_name(rows)
    runs = [r for r in rows if name is not None and r.format == name and r.status == "FINISHED"]
    return next((r for r in runs if r.window_sums is not None), runs[0] if runs else None)


def metric(row: Row, floor: Row) -> Optional[str]:
    """The quality metric both rows are compared on: KLD, else Δppl; None where they do not share one."""
    return next(
        (
            m
            for m in (M.QUALITY_KLD_MEAN, M.QUALITY_PPL_DELTA_PCT)
            if row.get(m) is not None and floor.get(m) is not None
        ),
        None,
    )


def versus(row: Row, floor: Row) -> Optional[Tuple[str, float, float, float]]:
    """(metric, row − floor, low, high): the paired difference to the floor on the same windows; None where there is
    none (no shared metric, or the two were not scored on the same windows with their window sums)."""
    name = metric(row, floor)
    d = ties.difference(row, floor, name) if name else None
    if d is None or d[3] != ties.PAIRED:
        return None
    return name, d[0], d[1], d[2]


def is_baseline(row: Row) -> bool:
    return row.format == baseline_name(row.params)


def within_noise(row: Row, floor: Row) -> bool:
    """Not told apart from the floor, or below it: the paired interval of row − floor reaches 0 or below."""
    d = versus(row, floor)
    return d is not None and d[2] <= 0.0


def status(row: Row, floor: Optional[Row]) -> Optional[str]:
    """BASELINE, FLOOR, NOISE (within engine noise), or None (above the floor, or not comparable)."""
    if floor is None:
        return None
    if is_baseline(row):
        return BASELINE
    if row is floor:
        return FLOOR
    return NOISE if within_noise(row, floor) else None


def cell(row: Row, floor: Optional[Row]) -> Optional[str]:
    """The "vs floor" column: baseline / floor / noise, else the paired difference to the floor, "+0.0123 ±0.0010"."""
    s = status(row, floor)
    if s is not None or floor is None:
        return s
    d = versus(row, floor)
    if d is None:
        return None
    name, point, low, high = d
    m = M.get(name)
    text = m.format(point)
    return ("+" + text if not text.startswith(("+", "-")) else text) + " ±" + m.format((high - low) / 2).lstrip("+")


def within_labels(rows: List[Row]) -> List[str]:
    """Labels of the runs within engine noise (neither the floor nor the baseline)."""
    floor = floor_row(rows)
    return [r.label for r in rows if r.status == "FINISHED" and status(r, floor) == NOISE]


def notes(rows: List[Row]) -> List[str]:
    """What the floor row and "vs floor" mean, for the summary; nothing where no run names a floor."""
    name = floor_name(rows)
    if name is None:
        return []
    floor = floor_row(rows)
    if floor is None:
        return [
            f"Noise floor: {KEY}={name} is not a finished run of this sweep, so no format is compared with it: add "
            f"format={name} to the sweep."
        ]
    measure = metric(floor, floor)
    head = (
        f"vs floor: the paired difference of {M.get(measure).header if measure else 'KLD'} to the noise floor "
        f"{floor.label} ({KEY}: the baseline's weights in another dtype or engine, on the same tokens), "
        "± half its 95 % paired bootstrap interval over the same windows; "
        f"{NOISE}: {WITHIN} (that interval contains 0 or lies below it)."
    )
    within = within_labels(rows)
    tail = f" Within engine noise: {', '.join(within)}." if within else " No format is within engine noise."
    unpaired = [
        r.label
        for r in rows
        if r.status == "FINISHED"
        and status(r, floor) is None
        and versus(r, floor) is None
        and r.get(M.QUALITY_KLD_MEAN) is not None
    ]
    if unpaired:
        tail += f" Not comparable with the floor (not scored on the same windows): {', '.join(unpaired)}."
    return [head + tail]


def decision_lines(rows: List[Row]) -> List[str]:
    """The decision's noise floor section: which formats lose no more than the baseline's weights elsewhere."""
    name = floor_name(rows)
    if name is None:
        return []
    floor = floor_row(rows)
    if floor is None:
        return ["", "## Noise floor", "", f"{KEY}={name} did not run in this sweep: no format was compared with it."]
    measure = metric(floor, floor) or M.QUALITY_KLD_MEAN
    m = M.get(measure)
    within = within_labels(rows)
    return [
        "",
        "## Noise floor",
        "",
        f"{floor.label} ({KEY}): the baseline's weights in another dtype or engine, {m.header} "
        f"{m.format(floor.get(measure))} on the same tokens. "
        + (
            f"Within engine noise (the paired 95 % interval of the difference to it contains 0 or lies below it): "
            f"{', '.join(within)}."
            if within
            else "No format is within engine noise: each one's loss is distinguishably above the floor's."
        ),
    ]


def mark(label: str, rows: List[Row]) -> str:
    """label, with " (within engine noise)" where it is."""
    return f"{label} ({WITHIN})" if label in within_labels(rows) else label
