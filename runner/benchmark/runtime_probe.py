"""An engine's fixed memory cost on CPU, measured: a fresh process like the offline benchmark's worker that imports
the engine and, for torch, builds and runs a model of the base model's architecture shrunk to a negligible size.

`python -m runner.benchmark.runtime_probe ENGINE CONFIG_JSON` prints the process's peak RSS (VmHWM) in
bytes. What it holds is what any model costs on that engine besides its weights, KV cache and activations: Python,
the runner's worker imports, torch and transformers with the architecture's modeling code, the first forward's
allocator arenas and kernel caches. runner/benchmark/fit.py adds it to its CPU estimates (memoized per machine).
"""

import json
import sys

# the shrunk model: one layer of width 64, a 256-token vocabulary (~0.1 MB of weights)
SHRUNK = {
    "num_hidden_layers": 1,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "vocab_size": 256,
}
PROMPT_TOKENS = 16  # a prefill and a few decode steps: the kernels and caches a generation sets up


def high_water() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def torch_runtime(config: dict) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("architectures", "auto_map", "quantization_config")}
    settings.update(SHRUNK)
    if isinstance(settings.get("text_config"), dict):
        settings["text_config"] = {**settings["text_config"], **SHRUNK}
    model_type = settings.pop("model_type", "llama")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings)).eval()
    ids = torch.randint(0, SHRUNK["vocab_size"], (1, PROMPT_TOKENS))
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        token = out.logits[0, -1].argmax().view(1, 1)
        for _ in range(4):
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
            token = out.logits[0, -1].argmax().view(1, 1)


def main(engine: str, config_json: str) -> None:
    import runner.benchmark.worker  # noqa: F401  the worker's own imports count: the benchmark measures its process

    if engine == "torch":
        torch_runtime(json.loads(config_json))
    elif engine == "llama_cpp":
        import llama_cpp  # noqa: F401
    else:
        raise SystemExit(f"no runtime probe for engine {engine}")
    print(high_water())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
