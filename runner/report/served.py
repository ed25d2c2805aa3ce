"""How each format served at the scenario's load, and where a quantized format stops out-serving the baseline.

Per format (its serving run under the scenario's load): the server that ran, the users, all users' output
tokens/s, tokens/s per user (the total ÷ users: what each closed-loop user gets on average) and the end-to-end
p95. The crossover reads the capacity search's probes (capacity.csv per run): at each concurrency both formats
were probed at, does the quantized format serve more output tokens/s than the baseline? The crossover is the
smallest such concurrency where it does not; "not reached" names the largest concurrency both measured.
The baseline is the unquantized format of the sweep (family torch_dtype), 16-bit before 32-bit: what one would
deploy without quantizing.
"""

from typing import Dict, List, Optional

from runner import metrics as M
from runner.report.data import Row
from runner.tracking import SERVER_TAG
from runner.tracking.capacity_csv import measured


def served_rows(rows: List[Row]) -> List[Row]:
    return [r for r in rows if r.status == "FINISHED" and r.get(M.SERVING_THROUGHPUT_TOK_S) is not None]


def per_user_tok_s(row: Row) -> Optional[float]:
    total, users = row.get(M.SERVING_THROUGHPUT_TOK_S), _users(row)
    return total / users if total is not None and users else None


def served_table(rows: List[Row]) -> List[str]:
    """Markdown table lines: format, server, users, total and per-user tok/s, p95 latency; [] without serving runs."""
    served = served_rows(rows)
    if not served:
        return []
    lines = [
        "| format | server | users | total tok/s | tok/s per user | latency p95 s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(served, key=lambda r: -(r.get(M.SERVING_THROUGHPUT_TOK_S) or 0)):
        p95 = r.get(M.SERVING_LATENCY_S_P95)
        lines.append(
            f"| {r.label} | {r.tags.get(SERVER_TAG, '?')} | {_users(r) or '?'} "
            f"| {r.get(M.SERVING_THROUGHPUT_TOK_S):.1f} | {per_user_tok_s(r) or float('nan'):.1f} "
            f"| {'' if p95 is None else f'{p95:.2f}'} |"
        )
    return lines


def baseline_label(rows: List[Row]) -> Optional[str]:
    unquantized = [r for r in served_rows(rows) if r.params.get("format.family") == "torch_dtype"]
    if not unquantized:
        return None
    return min(unquantized, key=lambda r: (_bits(r.params.get("format.dtype", "")), r.label)).label


def crossover_lines(rows: List[Row], curves: Dict[str, List[dict]]) -> List[str]:
    """One line per quantized format with a capacity curve: up to which probed concurrency it out-serves the base."""
    base = baseline_label(rows)
    if base is None or base not in curves:
        return []
    base_tput = _throughput_by_users(curves[base])
    out = []
    for label, probes in sorted(curves.items()):
        if label == base:
            continue
        mine = _throughput_by_users(probes)
        common = sorted(set(mine) & set(base_tput))
        if not common:
            continue
        behind = [u for u in common if mine[u] <= base_tput[u]]
        if not behind:
            out.append(
                f"{label} serves more tok/s than {base} at every concurrency both were probed at "
                f"(up to {common[-1]} users): no crossover measured"
            )
        elif behind[0] == common[0]:
            out.append(f"{label} serves no more tok/s than {base} already at {common[0]} users")
        else:
            ahead = max(u for u in common if u < behind[0])
            out.append(
                f"{label} out-serves {base} up to {ahead} users "
                f"({mine[ahead]:.1f} vs {base_tput[ahead]:.1f} tok/s), not at {behind[0]} "
                f"({mine[behind[0]]:.1f} vs {base_tput[behind[0]]:.1f} tok/s)"
            )
    return out


def _throughput_by_users(probes: List[dict]) -> Dict[int, float]:
    """Each measured probe's throughput by its users (a probe cut short by the time budget is left out)."""
    return {
        int(p["users"]): float(p["throughput_tok_s"])
        for p in probes
        if measured(p) and p.get("throughput_tok_s") not in ("", None)
    }


def _users(row: Row) -> Optional[int]:
    try:
        return int(float(row.params.get("benchmark.concurrency", "")))
    except ValueError:
        return None


def _bits(dtype: str) -> int:
    return 32 if "32" in dtype else 16


def served_section(rows: List[Row], curves: Dict[str, List[dict]]) -> str:
    """The decision's serving part as Markdown ('' without serving runs)."""
    table = served_table(rows)
    if not table:
        return ""
    lines = ["", "## Served at the measured load", "", *table]
    cross = crossover_lines(rows, curves)
    if cross:
        lines += ["", "Crossover with the unquantized baseline (capacity probes):", ""] + [f"- {x}" for x in cross]
    return "\n".join(lines) + "\n"
