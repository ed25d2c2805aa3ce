"""The decision's rules on hand-made runs: what "≈" lists, what "faster" means under Poisson arrivals, what an offline
p95 over few repeats is called, when the deciding speed is noisy, and the server command of the choice."""

from runner import metrics as M
from runner.config.presets import load_preset
from runner.report.data import Row
from runner.report.decision_text import decision_text
from runner.report.recommend import Constraints, recommend, violations
from runner.tracking import SERVER_COMMAND_TAG, SERVER_TAG

OFFLINE = {
    "hardware.name": "cpu",
    "format.engine": "llama_cpp",
    "benchmark.kind": "offline",
    "benchmark.prompt_tokens": "256",
    "benchmark.gen_tokens": "64",
    "benchmark.repeats": "5",
}


def offline_row(name, kld, lo, hi, tput, p95=2.0, extra=None):
    metrics = {
        M.QUALITY_KLD_MEAN: kld,
        M.QUALITY_KLD_MEAN + "_ci_low": lo,
        M.QUALITY_KLD_MEAN + "_ci_high": hi,
        M.QUALITY_PPL_DELTA_PCT: 1.0,
        M.PERF_LATENCY_S_P95: p95,
        M.PERF_THROUGHPUT_TOK_S: tput,
        M.PERF_PEAK_RSS_BYTES: 1e9,
        **(extra or {}),
    }
    return Row(name, "FINISHED", {"format.name": name, **OFFLINE}, metrics)


def local_scenario():
    return Constraints.of_scenario(load_preset("deployment", "cpu_local_1user", "deployment"))


def test_the_ties_listed_are_those_of_the_best_quality_format_not_of_the_choice():
    """a is best; b is tied with a and faster, so b is chosen; c is tied with b but not with a: not a tie."""
    rows = [
        offline_row("a", 0.0095, 0.008, 0.011, 20.0),
        offline_row("b", 0.0120, 0.010, 0.014, 30.0),
        offline_row("c", 0.0140, 0.0125, 0.016, 40.0),
    ]
    result = recommend(rows, local_scenario(), "quality")
    assert result["choice"].run_id == "b" and result["ties"] == ["a"]
    assert "not distinguishable from the best, a" in result["reason"] and "c on" not in result["reason"]


def test_under_poisson_arrivals_speed_ranks_on_latency_not_the_offered_rate():
    d = load_preset("deployment", "cpu_chat_4users", "deployment")
    d.arrival, d.rate = "poisson", 1.0
    params = {
        "hardware.name": "cpu",
        "format.engine": "llama_cpp",
        "benchmark.kind": "serving",
        "benchmark.arrival": "poisson",
        "benchmark.rate": "1.0",
        "benchmark.concurrency": "4",
        "benchmark.prompt_tokens": "128",
        "benchmark.gen_tokens": "32",
        "benchmark.requests": "32",
        "benchmark.request_timeout_s": str(d.request_timeout_s),
    }

    def row(name, tput, p95):
        metrics = {
            M.SERVING_THROUGHPUT_TOK_S: tput,  # pinned to the offered rate: the same for both, up to noise
            M.SERVING_LATENCY_S_P95: p95,
            M.SERVING_FAILURE_RATE: 0.0,
            M.PERF_PEAK_PSS_BYTES: 1e9,
            M.QUALITY_PPL_DELTA_PCT: 1.0,
        }
        return Row(name, "FINISHED", {"format.name": name, **params}, metrics)

    result = recommend([row("slow", 32.05, 4.0), row("quick", 32.00, 2.0)], Constraints.of_scenario(d), "speed")
    assert not result["rejected"] and result["choice"].run_id == "quick"


def test_an_offline_p95_over_few_repeats_is_named_for_what_it_is():
    row = offline_row("a", 0.01, 0.009, 0.011, 20.0, p95=12.0)
    (why,) = violations(row, local_scenario())
    assert why == "p95 of only 5 repeats (about their max) 12.00 s > 10 s"
    many = Row("m", "FINISHED", {**row.params, "benchmark.repeats": "40"}, row.metrics)
    assert violations(many, local_scenario()) == ["p95 12.00 s > 10 s"]


def test_the_decision_says_when_the_speed_that_decided_was_noisy():
    noisy = {M.PERF_DECODE_TOK_S_CV: 0.23}
    rows = [offline_row("fast", 0.02, 0.019, 0.021, 40.0, extra=noisy), offline_row("slow", 0.01, 0.009, 0.011, 20.0)]
    result = recommend(rows, local_scenario(), "speed")
    assert result["choice"].run_id == "fast"
    assert "varied over the repeats more than benchmark.noisy_cv" in result["reason"]
    quiet = [offline_row("fast", 0.02, 0.019, 0.021, 40.0), rows[1]]
    assert "noisy_cv" not in recommend(quiet, local_scenario(), "speed")["reason"]


def test_the_decision_prints_the_server_command_that_was_measured():
    c = local_scenario()
    row = offline_row("a", 0.01, 0.009, 0.011, 20.0)
    row.tags.update({SERVER_TAG: "llama_server", SERVER_COMMAND_TAG: "llama-server -m /x/model.gguf --parallel 4"})
    text = decision_text(recommend([row], c, "quality"), c, [row])
    assert "Deploy it as measured (llama_server" in text
    assert "```sh\nllama-server -m /x/model.gguf --parallel 4\n```" in text
    offline = offline_row("b", 0.01, 0.009, 0.011, 20.0)
    assert "not behind a server" in decision_text(recommend([offline], c, "quality"), c, [offline])


def test_a_run_served_by_another_server_than_the_scenario_names_is_not_judged():
    from runner.report.scenario import server_mismatch

    d = load_preset("deployment", "cpu_chat_4users", "deployment")
    d.servers = {"gguf_q4_k_m": "llama_server"}
    assert server_mismatch("gguf_q4_k_m", {SERVER_TAG: "llama_server"}, d) is None
    assert server_mismatch("gguf_q4_k_m", {SERVER_TAG: "llama_cpp_python"}, d) == (
        "served by llama_cpp_python; the scenario deploys gguf_q4_k_m with llama_server (deployment.servers)"
    )
    assert server_mismatch("bf16", {SERVER_TAG: "transformers"}, d) is None  # no server named for it
