"""qrun-report's quality distribution: llama.cpp's `llama-perplexity --kl-divergence` statistics and exllamav3's KLD
by the baseline's confidence, one row per run (quality.md beside table.md).

The columns are the metrics the catalog puts in its "quality" and "confidence" tables (runner/metrics.py), after the
quality metrics every sweep table already has; the names say what llama.cpp calls them, so a row reads beside
llama.cpp's own output (docs/measurements.md#llamacpps-statistics-and-the-kld-by-confidence).
"""

from typing import List

from runner import metrics as M
from runner.report import ties
from runner.report.columns import Column, cells, metric_column
from runner.report.data import Row

# metrics of the sweep table shown again here, as llama.cpp titles them
LEAD = {
    M.QUALITY_PPL: "PPL(Q)",
    M.QUALITY_BASELINE_PPL: "PPL(base)",
    M.QUALITY_KLD_MEAN: "KLD mean",
    M.QUALITY_KLD_P99: "KLD p99",
    M.QUALITY_TOP1_AGREE: "same top p",
}


def quality_columns() -> List[Column]:
    lead = [
        Column(header, lambda r, n=name: r.get(n), M.get(name).format, metric=name) for name, header in LEAD.items()
    ]
    return lead + [metric_column(m) for m in M.in_table("quality")]


def _bucket_cell(lo: float, hi: float):
    def get(row: Row):
        share = row.get(M.kld_by_confidence(lo, hi, "share"))
        if share is None:
            return None
        mean, median = (row.get(M.kld_by_confidence(lo, hi, s)) for s in ("mean", "p50"))
        if mean is None:  # no token of the run in this bucket
            return f"{share:.0%}"
        return f"{share:.0%}: {mean:.5f} / {median:.6f}"

    return get


def confidence_columns() -> List[Column]:
    return [
        Column(f"base top-1 p [{lo:.2f}, {hi:.2f}{']' if hi == 1.0 else ')'}", _bucket_cell(lo, hi), str)
        for lo, hi in M.CONFIDENCE_BUCKETS
    ]


def _table(columns: List[Column], rows: List[Row]) -> List[str]:
    columns = [Column("format", lambda r: r.label, str, left=True), *columns]
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in cells(columns, rows)]


def quality_markdown(rows: List[Row]) -> str:
    """The two tables, best quality first; "" when no run has the statistics (runs from before they existed)."""
    rows = ties.quality_order([r for r in rows if r.get(M.QUALITY_KLD_P50) is not None])
    if not rows:
        return ""
    protocols = sorted({r.params.get("eval.protocol", "?") for r in rows})
    return "\n".join(
        [
            "## Per-token quality: llama.cpp's statistics",
            "",
            "On each run's own eval windows (" + "; ".join(protocols) + "). KLD percentiles and Δp (p of the correct "
            "token under the format − under the baseline) from fixed bins, within 2.33 % of the exact value; ± is "
            "half the 95 % interval (bootstrap over windows).",
            "",
            *_table(quality_columns(), rows),
            "",
            "## KLD by the baseline's confidence (exllamav3's buckets)",
            "",
            "Each cell: share of the tokens whose baseline top-1 probability falls in the bucket: their mean KLD / "
            "median KLD.",
            "",
            *_table(confidence_columns(), rows),
            "",
        ]
    )
