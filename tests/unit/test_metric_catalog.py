"""runner/metrics.py is the one owner of metric names: logging, tables and recommend go through it."""

import ast
import re
from types import SimpleNamespace as NS

import pytest

from helpers import ROOT
from runner import metrics as M
from runner.errors import UserError
from runner.report import columns
from runner.report.cli import markdown, parse_limits
from runner.report.data import Row
from runner.report.recommend import Constraints, recommend, violations
from runner.report.summary import table
from runner.tracking import Tracker

# every namespace the catalog holds, the per-task families' included
NAMESPACES = sorted({name.split("/")[0] for name in M.METRICS} | {M.task_metric("any", "acc").split("/")[0]})
LITERAL = re.compile(rf"({'|'.join(NAMESPACES)})/[a-z0-9_]+")


def metric_strings(tree: ast.AST):
    """Metric-like string literals, and f-strings as regexes (each placeholder: one name fragment)."""
    literals, patterns = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and LITERAL.fullmatch(node.value):
            literals.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            parts = [re.escape(v.value) if isinstance(v, ast.Constant) else "[a-z0-9_]+" for v in node.values]
            first = node.values[0] if node.values else None
            if isinstance(first, ast.Constant) and re.match(rf"({'|'.join(NAMESPACES)})/", str(first.value)):
                patterns.append("".join(parts))
    return literals, patterns


def _scan_runner():
    found = {}
    for path in sorted(p for p in (ROOT / "runner").rglob("*.py") if p != ROOT / "runner" / "metrics.py"):
        literals, patterns = metric_strings(ast.parse(path.read_text(), str(path)))
        found.update({(str(path.relative_to(ROOT)), s): s for s in literals + patterns})
    return found


def test_the_namespaces_come_from_the_catalog():
    assert {"quality", "size", "time", "perf", "serving", "capacity", "task"} <= set(NAMESPACES)


def test_no_metric_name_is_spelled_out_in_runner_outside_the_catalog():
    """Code reads and logs names through runner/metrics.py's constants (QUALITY_KLD_MEAN, task_metric(), member())."""
    assert sorted(_scan_runner()) == []


def test_every_metric_constant_is_declared():
    constants = {k: v for k, v in vars(M).items() if k.isupper() and isinstance(v, str) and LITERAL.fullmatch(v)}
    assert len(constants) >= len(M.METRICS)
    assert [
        k for k, v in constants.items() if not (M.is_declared(v) or any(n.startswith(v + "_") for n in M.METRICS))
    ] == []


def test_the_scan_catches_a_new_literal():
    literals, patterns = metric_strings(
        ast.parse('m = {"quality/new_thing": 1, f"serving/{k}_p{q}": 2, "capacity/x": 3}')
    )
    assert literals == ["quality/new_thing", "capacity/x"]
    assert patterns == [r"serving/[a-z0-9_]+_p[a-z0-9_]+"]


def test_serving_load_logs_only_declared_names_apart_from_offline_ones():
    from runner.benchmark.loadgen import RequestResult, summarize

    results = [
        RequestResult(i, status="ok", sent_s=0.1 * i, ttft_s=0.05, latency_s=0.5, tpot_s=0.01, output_tokens=8)
        for i in range(4)
    ] + [RequestResult(4, status="failed")]
    m = summarize(results, NS(ttft_s=1.0, tpot_s=None, latency_s=None))
    M.check_declared(m)
    assert {
        "serving/ttft_s_p50",
        "serving/tpot_s_mean",
        "serving/latency_s_p99",
        "serving/throughput_tok_s",
        "serving/requests_per_s",
        "serving/slo_attainment",
        "serving/duration_s",
        "serving/requests_not_sent",
    } <= set(m)
    assert all(name.startswith("serving/") for name in m)  # never the offline benchmark's perf/* names
    assert (
        M.get("perf/throughput_tok_s").producer == M.OFFLINE and M.get("serving/throughput_tok_s").producer == M.SERVING
    )


def test_catalog_declarations_are_complete():
    for m in M.METRICS.values():
        assert m.header and m.producer and m.better in M.DIRECTIONS, m
        assert m.format(1.0) != "-"
    assert M.ci_names("quality/kld_mean") == ("quality/kld_mean_ci_low", "quality/kld_mean_ci_high")
    assert M.get("quality/kld_mean_ci_high").format(0.01234) == M.get("quality/kld_mean").format(0.01234)
    with pytest.raises(ValueError, match="not declared"):
        M.ci_names("quality/nope")


def test_tracker_refuses_an_undeclared_metric(tmp_path):
    tracker = Tracker(NS(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="catalog"))
    run_id = tracker.start("t")
    with pytest.raises(ValueError, match=r"undeclared metric.*'quality/made_up'.*runner/metrics.py") as err:
        tracker.log_metrics({"quality/ppl": 10.0, "quality/made_up": 1.0})
    assert not isinstance(err.value, UserError)  # a programming error, not the user's
    assert tracker.client.get_run(run_id).data.metrics == {}  # nothing half-logged
    tracker.log_metrics({"quality/ppl": 10.0, "quality/ppl_ci_low": 9.5, "serving/slo_attainment": 1.0})
    assert tracker.client.get_run(run_id).data.metrics == {
        "quality/ppl": 10.0,
        "quality/ppl_ci_low": 9.5,
        "serving/slo_attainment": 1.0,
    }


def _run(i, params, metrics, status="FINISHED"):
    return NS(
        info=NS(run_id=f"r{i}", status=status, start_time=i, run_name=f"run{i}"),
        data=NS(params=params, metrics=metrics, tags={}),
    )


OFFLINE_RUNS = [
    _run(
        0,
        {"format.name": "fp32", "format.engine": "torch"},
        {
            "size/bytes": 5.8e6,
            "size/bits_per_weight": 32.0,
            "quality/ppl": 526.0231,
            "quality/ppl_delta_pct": 0.0,
            "quality/kld_mean": 0.0,
            "quality/kld_p99": 0.0,
            "quality/top1_agree": 1.0,
            "perf/prefill_tok_s": 373.2,
            "perf/decode_tok_s": 42.31,
            "perf/ttft_s_p50": 0.0431,
            "perf/latency_s_p95": 0.2249,
            "time/quantize_s": 6.21,
            "perf/peak_rss_bytes": 1.153e9,
        },
    ),
    _run(
        1,
        {"format.name": "int8", "format.backend": "torchao", "format.engine": "torch"},
        {
            "size/bytes": 1.53e6,
            "size/bits_per_weight": 8.52,
            "quality/ppl": 530.4121,
            "quality/ppl_delta_pct": 0.0834,
            "quality/kld_mean": 0.00041,
            "quality/kld_p99": 0.0012,
            "quality/top1_agree": 0.963,
            "time/quantize_s": 0.04,
        },
    ),
    _run(2, {"format.name": "gguf_q2_k", "format.engine": "llama_cpp"}, {"size/bytes": 0.6e6}, status="FAILED"),
]
# runner/summary.py's table() before the catalog on OFFLINE_RUNS, plus the one column added since: the
# engine's peak RSS (the memory a deployment needs, measured in the engine's own process)
SUMMARY_BEFORE = """\
format     backend  engine     size MB  peak RSS MB    bpw      ppl  Δppl %     KLD  KLD p99   top-1  prefill t/s  decode t/s  TTFT s  p95 s  quant s    status
---------  -------  ---------  -------  -----------  -----  -------  ------  ------  -------  ------  -----------  ----------  ------  -----  -------  --------
fp32       -        torch          5.8         1153  32.00  526.023   +0.00  0.0000    0.000  100.0%          373        42.3   0.043   0.22      6.2  FINISHED
int8       torchao  torch          1.5            -   8.52  530.412   +0.08  0.0004    0.001   96.3%            -           -       -      -      0.0  FINISHED
gguf_q2_k  -        llama_cpp      0.6            -      -        -       -       -        -       -            -           -       -      -        -    FAILED"""


def test_summary_table_is_unchanged_and_formats_come_from_the_catalog():
    assert table(OFFLINE_RUNS) == SUMMARY_BEFORE
    row = Row("r0", "FINISHED", OFFLINE_RUNS[0].data.params, OFFLINE_RUNS[0].data.metrics)
    for c in (c for c in columns.SUMMARY if c.metric):
        m = M.get(c.metric)
        assert (c.header, c.cell(row)) == (m.header, m.format(row.get(m.name)))
    # a serving run adds the serving columns; offline rows show dashes there
    served = _run(
        3,
        {"format.name": "gguf_q8_0", "format.engine": "llama_cpp"},
        {"serving/ttft_s_p50": 0.0761, "serving/latency_s_p95": 0.0912, "serving/throughput_tok_s": 351.62},
    )
    header, _, *rows = table(OFFLINE_RUNS + [served]).splitlines()
    assert header.split("  p95 s  ")[1].split() == [
        "serve",
        "TTFT",
        "p50",
        "s",
        "serve",
        "p95",
        "s",
        "serve",
        "tok/s",
        "quant",
        "s",
        "status",
    ]
    assert rows[-1].split()[-5:-1] == ["0.076", "0.09", "351.6", "-"]


def test_report_columns_format_from_the_catalog():
    rows = [
        Row(
            "a",
            "FINISHED",
            {"format.name": "gguf_q8_0", "format.engine": "llama_cpp", "hardware.name": "cpu"},
            {
                "size/bytes": 1.53e6,
                "perf/peak_rss_bytes": 5.44e8,
                "serving/latency_s_p95": 0.0912,
                "serving/throughput_tok_s": 351.62,
                "serving/slo_attainment": 1.0,
            },
        ),
        Row(
            "b",
            "FINISHED",
            {"format.name": "fp16", "format.engine": "vllm", "hardware.name": "gpu"},
            {"perf/peak_rss_bytes": 9e9, "perf/peak_vram_bytes": 3.04e10, "quality/top1_agree": 0.9634},
        ),
    ]
    head, _, first, second = markdown(rows).splitlines()
    assert head == "| format | hardware | size MB | peak mem MB | top-1 | serve p95 s | serve tok/s | in SLO | status |"
    assert first == "| gguf_q8_0 | cpu | 1.5 | 544 | - | 0.09 | 351.6 | 100% | FINISHED |"
    assert second == "| fp16 @vllm | gpu | - | 30400 | 96.3% | - | - | - | FINISHED |"
    for c in (c for c in columns.REPORT if c.metric and c.header != "peak mem MB"):
        assert c.cell(rows[0]) == M.get(c.metric).format(rows[0].get(c.metric)) and c.header == M.get(c.metric).header


def test_recommend_reads_directions_and_formats_from_the_catalog():
    served = Row(
        "s",
        "FINISHED",
        {"format.name": "awq"},
        {
            "serving/latency_s_p95": 2.123,
            "serving/throughput_tok_s": 80.04,
            "perf/latency_s_p95": 0.5,
            "quality/kld_p99": 0.02345,
        },
    )
    assert violations(served, Constraints(max_latency_p95_s=1, min_throughput_tok_s=100)) == [
        "p95 2.12 s > 1 s",
        "80.0 tok/s < 100",
    ]  # serving numbers where a serving benchmark ran
    offline = Row(
        "o",
        "FINISHED",
        {"format.name": "fp16"},
        {"perf/latency_s_p95": 0.5, "quality/top1_agree": 0.85, "quality/kld_p99": 0.001},
    )
    limits = parse_limits(["quality/kld_p99=0.01", "quality/top1_agree=0.9"])
    c = Constraints(limits=limits)
    assert violations(served, c) == ["KLD p99 0.023 > 0.01", "top-1 not measured"]
    assert violations(offline, c) == ["top-1 85.0% < 0.9"]
    assert recommend([served, offline], Constraints(limits={"quality/kld_p99": 0.01}))["choice"] is offline
    for bad in ("quality/nope=1", "serving/duration_s=3", "quality/ppl=x"):
        with pytest.raises(UserError, match="--limit"):
            parse_limits([bad])


def test_readme_lists_the_serving_names():
    readme = (ROOT / "README.md").read_text()
    assert "`serving/throughput_tok_s`" in readme and "`perf/requests_per_s`" not in readme
    assert "peak RSS of the process during load + benchmark" not in readme


def test_report_memory_column_never_shows_host_rss_for_a_gpu_run():
    """The same rule as recommend: a GPU run without a VRAM measure reads '-', not its host RSS."""
    gpu = Row(
        "g",
        "FINISHED",
        {"format.name": "awq", "hardware.device": "cuda", "hardware.name": "h100"},
        {"perf/peak_rss_bytes": 2.1e9},
    )
    cpu = Row(
        "c",
        "FINISHED",
        {"format.name": "gguf_q8_0", "hardware.device": "cpu", "hardware.name": "cpu"},
        {"perf/peak_rss_bytes": 2.36e8},
    )
    assert [columns.peak_memory(r) for r in (gpu, cpu)] == [None, 2.36e8]
