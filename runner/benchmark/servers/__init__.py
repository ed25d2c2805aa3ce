"""OpenAI-compatible servers for the serving benchmark, one per engine (README, "Serving benchmark")."""
from runner.errors import UserError
from runner.benchmark.servers import llama_cpp_server
from runner.benchmark.servers import transformers_server
from runner.benchmark.servers import vllm_server
from runner.benchmark.servers.process import ServerProcess, ServerSpec, pick_port
from runner.config.checks import check_loopback

SERVERS = {"llama_cpp": llama_cpp_server, "torch": transformers_server, "vllm": vllm_server}


def server_spec(artifact, engine: str, model, bench_cfg, hardware, port: int) -> ServerSpec:
    """The server for `engine` (the job's format.engine) running this artifact, bound to bench_cfg.host:port."""
    if engine not in SERVERS:
        raise UserError("benchmark.kind", f"no OpenAI-compatible server for the {engine} engine in this runner "
                        "(ExLlamaV2's usual one, TabbyAPI, is not a pip package)",
                        "benchmark this model as GGUF, or with format.engine=vllm on a GPU")
    return SERVERS[engine].spec(artifact, model, bench_cfg, hardware, bench_cfg.host, port)


__all__ = ["ServerProcess", "ServerSpec", "check_loopback", "pick_port", "server_spec"]
