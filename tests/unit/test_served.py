"""The decision's serving part: per-user tokens/s and the crossover with the unquantized baseline."""

from runner.report.data import Row
from runner.report.served import baseline_label, crossover_lines, served_section


def _row(run_id, fmt, family, tput, users=4, dtype=""):
    params = {"format.name": fmt, "format.family": family, "format.engine": "torch"}
    params["benchmark.concurrency"] = str(users)
    if dtype:
        params["format.dtype"] = dtype
    metrics = {"serving/throughput_tok_s": tput, "serving/latency_s_p95": 2.0}
    return Row(run_id, "FINISHED", params, metrics, {"serving.server": "vllm"})


def _curve(points):
    return [{"users": u, "throughput_tok_s": t, "latency_s_p95": 1.0, "meets_slo": 1} for u, t in points]


ROWS = [
    _row("a", "fp32", "torch_dtype", 30.0, dtype="float32"),
    _row("b", "bf16", "torch_dtype", 40.0, dtype="bfloat16"),
    _row("c", "gptq_int4", "gptq", 60.0),
    _row("d", "gguf_q4_k_m", "gguf", 20.0),
]


def test_the_baseline_is_the_16_bit_unquantized_format():
    assert baseline_label(ROWS) == "bf16"


def test_crossover_is_the_first_common_concurrency_where_the_quantized_format_falls_behind():
    curves = {
        "bf16": _curve([(4, 40.0), (8, 70.0), (16, 120.0)]),
        "gptq_int4": _curve([(4, 60.0), (8, 80.0), (16, 100.0), (12, 95.0)]),  # 12: not probed on bf16
        "gguf_q4_k_m": _curve([(4, 20.0), (8, 30.0)]),
    }
    lines = crossover_lines(ROWS, curves)
    assert "gptq_int4 out-serves bf16 up to 8 users (80.0 vs 70.0 tok/s), not at 16 (100.0 vs 120.0 tok/s)" in lines
    assert "gguf_q4_k_m serves no more tok/s than bf16 already at 4 users" in lines
    ahead = crossover_lines(ROWS, {"bf16": _curve([(4, 40.0)]), "gptq_int4": _curve([(4, 60.0)])})
    assert ahead == [
        "gptq_int4 serves more tok/s than bf16 at every concurrency both were probed at (up to 4 users): "
        "no crossover measured"
    ]


def test_the_section_shows_total_and_per_user_tokens_per_second():
    text = served_section(ROWS, {})
    assert "| gptq_int4 | vllm | 4 | 60.0 | 15.0 | 2.00 |" in text
    assert text.index("gptq_int4") < text.index("bf16")  # fastest first
    assert served_section([], {}) == ""


def test_a_probe_cut_short_by_the_time_budget_is_neither_a_crossover_nor_a_point_of_the_curve():
    """gptq's probe at 16 users was cut short (meets_slo ""): its partial tok/s must not make a crossover, and the
    capacity plot draws it apart from the measured line."""
    from runner.report.plots import capacity_points

    cut = {"users": 16, "throughput_tok_s": 10.0, "latency_s_p95": 9.0, "meets_slo": ""}
    curves = {"bf16": _curve([(4, 40.0), (16, 120.0)]), "gptq_int4": _curve([(4, 60.0)]) + [cut]}
    assert crossover_lines(ROWS, curves) == [
        "gptq_int4 serves more tok/s than bf16 at every concurrency both were probed at (up to 4 users): "
        "no crossover measured"
    ]
    assert capacity_points(curves["gptq_int4"]) == ([(4, 1.0, 1)], [(16, 9.0)])
