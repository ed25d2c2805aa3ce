"""The decision as Markdown: the scenario, the choice and why, how to deploy it as measured, what was rejected and
the capacity lines; without a scenario, what the measurements can honestly say. The rules are in recommend.py."""

from typing import Dict, List

from runner import metrics as M
from runner.report import floor
from runner.report.data import Row
from runner.report.measures import GIB, memory, pct, throughput
from runner.report.recommend import Constraints, facts, leader_ties, noisy_text, rank


def deploy_lines(choice: Row) -> List[str]:
    """The server command the benchmark measured for the chosen format, to deploy it as it was measured."""
    from runner.tracking import SERVER_COMMAND_TAG, SERVER_TAG

    server = choice.tags.get(SERVER_TAG)
    if server is None:
        engine = choice.params.get("format.engine", "?")
        return ["", f"Measured offline on the {engine} engine, not behind a server: no server command to deploy."]
    command = choice.tags.get(SERVER_COMMAND_TAG)
    where = "artifacts/serving/server_command.sh of its run"
    if command is None:
        return ["", f"Deploy it as measured: the {server} command is in {where}."]
    return [
        "",
        f"Deploy it as measured ({server}, the command the benchmark ran; also in {where}):",
        "",
        "```sh",
        command,
        "```",
    ]


def scenario_bounds(c: Constraints) -> List[str]:
    """The scenario's bounds in words."""
    out = []
    for what, v in (
        ("TTFT p95", c.max_ttft_p95_s),
        ("TPOT p95", c.max_tpot_p95_s),
        ("latency p95", c.max_latency_p95_s),
    ):
        if v is not None:
            out.append(f"{what} ≤ {v:g} s")
    if c.min_throughput_tok_s is not None:
        out.append(f"throughput ≥ {c.min_throughput_tok_s:g} tok/s")
    if c.max_failure_rate is not None:
        out.append(f"failed or unsent ≤ {pct(c.max_failure_rate)}")
    if c.memory_bytes is not None:
        out.append(f"memory ≤ {c.memory_bytes / GIB:.2f} GiB")
    if c.max_ppl_delta_pct is not None:
        out.append(f"Δppl ≤ {c.max_ppl_delta_pct:g} %")
    if c.max_kld is not None:
        out.append(f"KLD ≤ {c.max_kld:g}")
    return out


def capacity_lines(rows: List[Row]) -> List[str]:
    """'gguf_q4_k_m holds the SLO up to 3 users' for every run that searched its capacity."""
    out = []
    for r in rows:
        n = r.get(M.CAPACITY_MAX_USERS)
        if n is None:
            continue
        exact = r.get(M.CAPACITY_BRACKETED) == 1
        text = (
            f"{r.label} holds the SLO up to {n:.0f} user{'s' * (n != 1)}"
            if n >= 1
            else f"{r.label} misses the SLO even at 1 user"
        )
        out.append(text + ("" if exact or n < 1 else " (at least: the search stopped before a load that misses it)"))
    return out


def decision_text(result: Dict, c: Constraints, rows: List[Row]) -> str:
    """The recommendation as Markdown: choice, why, runner-up, every rejected format with what it breaks, capacity."""
    d = c.scenario
    lines = []
    if d is not None:
        from runner.report.scenario import describe_load

        lines += [
            f"# Deployment scenario `{d.name}`",
            "",
            f"{d.description}".strip(),
            "",
            f"- load: {describe_load(d)} on hardware `{d.hardware}`",
            f"- bounds: {'; '.join(scenario_bounds(c)) or 'none'}",
            f"- preference: {d.prefer}",
            "",
        ]
    choice = result["choice"]
    if choice is None:
        lines += ["## No recommendation", "", "No format meets every bound of the scenario."]
    else:
        lines += [f"## Recommendation: {floor.mark(choice.label, rows)}", "", f"Why: {result['reason']}."]
        if result["runner_up"] is not None:
            runner_up = result["runner_up"]
            lines += ["", f"Runner-up: {floor.mark(runner_up.label, rows)} ({facts(runner_up, c)})."]
        lines += deploy_lines(choice)
    if result["rejected"]:
        lines += ["", "## Rejected", ""] + [
            f"- {floor.mark(label, rows)}: {'; '.join(why)}" for label, why in result["rejected"].items()
        ]
    if result["set_aside"]:
        lines += [
            "",
            f"Not judged (measured under another load; the format's run under the scenario's load was): "
            f"{', '.join(result['set_aside'])}.",
        ]
    cap = capacity_lines([r for r in rows if r.status == "FINISHED"])
    if cap:
        lines += ["", "## Capacity (largest concurrency within the SLO)", ""] + [f"- {x}" for x in cap]
    lines += floor.decision_lines(rows)
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def without_scenario_text(rows: List[Row]) -> str:
    """What the sweep can honestly say without a deployment scenario: the leaders per axis, with ties."""
    finished = [r for r in rows if r.status == "FINISHED"]
    lines = [
        "## No deployment scenario",
        "",
        "Nothing to check the formats against (no SLO, no memory budget, no quality floor): pass "
        "`deployment=<scenario>` (conf/deployment/) for a decision. What the measurements say:",
        "",
    ]
    c = Constraints()
    quality = [
        r for r in finished if r.get(M.QUALITY_KLD_MEAN) is not None or r.get(M.QUALITY_PPL_DELTA_PCT) is not None
    ]
    groups = [
        ("best quality (KLD vs the baseline, then Δppl)", "quality", quality),
        ("smallest in memory", "size", [r for r in finished if memory(r)]),
    ]
    from runner.report.scenario import run_load

    loads: Dict[str, List[Row]] = {}
    for r in finished:  # speed only compares runs measured under the same load
        if throughput(r):
            loads.setdefault(f"{run_load(r.params)} on {r.params.get('hardware.name', '?')}", []).append(r)
    groups += [(f"fastest under {load}", "speed", rs) for load, rs in loads.items()]
    for what, prefer, usable in groups:
        if not usable:
            continue
        ordered, tied_best = leader_ties(usable, prefer, c)
        leader = rank(usable, prefer, c)[0]
        ties = [r.label for r in tied_best if r is not leader]
        lines.append(
            f"- {what}: {floor.mark(leader.label, rows)} ({facts(leader, c)})"
            + (f" ≈ {', '.join(ties)}" if ties else "")
            + noisy_text(leader, prefer, c, bool(ties))
        )
    cap = capacity_lines(finished)
    if cap:
        lines += [""] + [f"- {x}" for x in cap]
    lines += floor.decision_lines(rows)
    return "\n".join(lines) + "\n"
