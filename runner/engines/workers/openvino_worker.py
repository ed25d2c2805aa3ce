"""OpenVINO's worker: export + weight compression, and the engine, inside .venv-openvino (not the runner's venv).

    .venv-openvino/bin/python runner/engines/workers/openvino_worker.py export SETTINGS_JSON
    .venv-openvino/bin/python runner/engines/workers/openvino_worker.py serve SETTINGS_JSON

Standard library + openvino/optimum-intel (and the torch/transformers/numpy they bring) only: it never imports
`runner` (.venv-openvino has no runner; optimum-intel caps transformers below the runner's pin).

export: optimum-intel traces the HF folder `src` to an OpenVINO IR (stateful: the KV cache lives inside the
model) and NNCF compresses its weights data-free (`OVWeightQuantizationConfig`: bits, sym, group_size, ratio,
all_layers), saved to `out` (openvino_model.xml + .bin, config.json, generation_config.json). The last stdout
line is a JSON report: the .bin's constants by element type (what the file really stores) and versions.

serve: one JSON request per line on stdin, one answer per line on a private copy of the original stdout
(fd 1 itself is pointed at stderr, where libraries print):
  {"op": "logprobs", "ids": [...], "out": PATH} -> {"ok": {"shape": [n, vocab]}}: log-softmax over the full
      vocabulary at every position, float32, one forward of the window from an empty KV cache, written as an
      .npy file to PATH (a 512-token window of a 49k vocabulary is ~100 MB: a file, not JSON)
  {"op": "generate", "ids": [...], "new_tokens": N} -> {"ok": {"ttft_s", "total_s", "new_tokens"}}: greedy,
      exactly N new tokens (EOS suppressed), TTFT = request start -> the first new token, timed here
  {"op": "quit"} -> {"ok": "bye"}
An error answers {"error": "..."} and the worker keeps serving. The first line is {"ready": {...}} once loaded.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its sibling, however this file is run or imported
from jsonlines_protocol import serve  # noqa: E402


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("openvino", "nncf", "optimum-intel", "transformers", "torch")}


def constants_by_type(xml_path: str) -> dict:
    """{kind: {"tensors", "elements", "bytes"}} over the IR's constants: weights (2-D or more, >= 4096 elements) by
    element type (u8, u4, f32 ...), their per-channel/per-group scales and zero points (last dimension 1), other."""
    import openvino as ov

    types = {}
    for node in ov.Core().read_model(xml_path).get_ops():
        if node.get_type_name() != "Constant":
            continue
        shape = list(node.get_output_partial_shape(0).to_shape())
        n = 1
        for d in shape:
            n *= d
        et = node.get_output_element_type(0)
        if len(shape) >= 2 and shape[-1] == 1:
            kind = "scales/zero points"
        elif len(shape) >= 2 and n >= 4096:
            kind = et.get_type_name()
        else:
            kind = "other"
        t = types.setdefault(kind, {"tensors": 0, "elements": 0, "bytes": 0})
        t["tensors"] += 1
        t["elements"] += n
        t["bytes"] += (n * et.bitwidth + 7) // 8
    return types


def export(settings: dict) -> dict:
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    qcfg = OVWeightQuantizationConfig(
        bits=settings["bits"],
        sym=settings["sym"],
        group_size=settings["group_size"],
        ratio=settings["ratio"],
        all_layers=settings["all_layers"],
    )
    start = time.perf_counter()
    model = OVModelForCausalLM.from_pretrained(
        settings["src"], export=True, quantization_config=qcfg, compile=False, stateful=True
    )
    model.save_pretrained(settings["out"])
    wall = time.perf_counter() - start
    return {
        "export_s": wall,
        "constants": constants_by_type(os.path.join(settings["out"], "openvino_model.xml")),
        "versions": versions(),
        "quantization_config": qcfg.to_dict(),
    }


class TimedStreamer:
    """transformers' streamer protocol: put() gets the prompt first, then each new token; records the first token's
    time."""

    def __init__(self):
        self.calls, self.first_token_at = 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2 and self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class Server:
    def __init__(self, settings: dict):
        from optimum.intel import OVModelForCausalLM

        ov_config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "CACHE_DIR": "",
            "INFERENCE_NUM_THREADS": str(settings["threads"]),
        }
        if settings.get("inference_precision"):
            ov_config["INFERENCE_PRECISION_HINT"] = settings["inference_precision"]
        if settings.get("dynamic_quantization_group_size") is not None:
            ov_config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = str(settings["dynamic_quantization_group_size"])
        self.model = OVModelForCausalLM.from_pretrained(settings["model"], ov_config=ov_config, device="CPU")
        self.eos = self.model.generation_config.eos_token_id

    def logprobs(self, ids, out_path: str) -> dict:
        import numpy as np
        import torch

        input_ids = torch.tensor([[int(t) for t in ids]], dtype=torch.int64)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[0]
        lp = torch.log_softmax(logits.float(), dim=-1).numpy().astype(np.float32, copy=False)
        np.save(out_path, lp)
        return {"shape": list(lp.shape)}

    def generate(self, ids, new_tokens: int) -> dict:
        import torch

        input_ids = torch.tensor([[int(t) for t in ids]], dtype=torch.int64)
        streamer = TimedStreamer()
        start = time.perf_counter()
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            streamer=streamer,
            num_beams=1,
            pad_token_id=self.eos if isinstance(self.eos, int) else 0,
        )
        total = time.perf_counter() - start
        n = int(out.shape[1]) - len(ids)
        if n != new_tokens or streamer.first_token_at is None:
            raise RuntimeError(f"OpenVINO generated {n} tokens, {new_tokens} asked")
        return {"ttft_s": streamer.first_token_at - start, "total_s": total, "new_tokens": n}


def serve_model(settings: dict) -> int:
    ops = {
        "logprobs": lambda server, req: server.logprobs(req["ids"], req["out"]),
        "generate": lambda server, req: server.generate(req["ids"], int(req["new_tokens"])),
    }
    return serve(lambda: Server(settings), ops, versions)


def main(mode: str, settings: dict) -> int:
    if mode == "export":
        report = export(settings)
        print(json.dumps(report), flush=True)  # the last line of stdout: the runner reads it
        return 0
    if mode == "serve":
        return serve_model(settings)
    print(f"unknown mode {mode!r}: use export or serve", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[2])))
