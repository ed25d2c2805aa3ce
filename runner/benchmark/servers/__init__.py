"""OpenAI-compatible servers for the serving benchmark: the one deploying each engine (its ENGINES row's `server`)."""

import importlib

from runner.benchmark.servers.process import ServerProcess, ServerSpec, pick_port
from runner.config.checks import check_loopback
from runner.engines import ENGINES
from runner.errors import UserError


def server_spec(artifact, engine: str, model, bench_cfg, hardware, port: int) -> ServerSpec:
    """The server for `engine` (the job's format.engine) running this artifact, bound to bench_cfg.host:port."""
    row = ENGINES.get(engine)
    if row is None or row.server is None:
        raise UserError(
            "benchmark.kind",
            f"no OpenAI-compatible server for the {engine} engine in this runner "
            "(ExLlamaV2's usual one, TabbyAPI, is not a pip package)",
            "benchmark this model as GGUF, or with format.engine=vllm on a GPU",
        )
    return importlib.import_module(row.server).spec(artifact, model, bench_cfg, hardware, bench_cfg.host, port)


__all__ = ["ServerProcess", "ServerSpec", "check_loopback", "pick_port", "server_spec"]
