"""capacity.csv, a serving run's artifact: one row per probe of the capacity search, in the order run.

Written by the benchmark (runner/benchmark/capacity.py), read back by the report's capacity plot.
"""

import csv
from pathlib import Path
from typing import Dict, List

FIELDS = [
    "users",
    "requests",
    "meets_slo",
    "misses",
    "ttft_s_p95",
    "latency_s_p95",
    "tpot_s_p95",
    "failure_rate",
    "throughput_tok_s",
    "seconds",
]


def write(rows: List[Dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def measured(probe: Dict) -> bool:
    """False for a probe the search's time budget cut short: its partial numbers say nothing about the SLO."""
    return probe.get("meets_slo") not in ("", None)


def read(path: Path) -> List[Dict[str, float]]:
    with open(path) as f:
        return [
            {k: (float(v) if v not in ("", None) and k != "misses" else v) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]
