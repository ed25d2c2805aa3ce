"""transformers/PyTorch engine: loads any HF folder (safetensors) that from_pretrained understands, or a
GGUF artifact's file (transformers dequantizes it: the file's weights, computed in fp32).

torch is imported inside the methods: asking this engine its version (a resumed job's key) must not load it."""
import time
from typing import List, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.errors import UserError
from runner.packages import dist_versions


class TorchLoaded(LoadedModel):
    engine = "torch"

    def __init__(self, hf_model, device: str):
        import torch

        self.model, self.device = hf_model, device
        if str(device).startswith("cuda"):
            self.sync = torch.cuda.synchronize

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ids = torch.tensor([list(input_ids)], device=self.device)
            logits = self.model(input_ids=ids, use_cache=False).logits[0]
            return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        import torch

        with torch.inference_mode():
            return self._generate(torch.tensor([prompt_ids], device=self.device), new_tokens)

    def _generate(self, ids, new_tokens: int) -> GenerationTiming:
        self.sync()
        start = time.perf_counter()
        out = self.model(input_ids=ids, use_cache=True)
        token = out.logits[0, -1].argmax().view(1, 1)
        self.sync()
        ttft = time.perf_counter() - start
        past = out.past_key_values
        for _ in range(new_tokens - 1):
            out = self.model(input_ids=token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        self.sync()
        return GenerationTiming(ttft_s=ttft, total_s=time.perf_counter() - start, new_tokens=new_tokens)

    def close(self) -> None:
        del self.model


class TorchEngine(Engine):
    NAME = "torch"

    def version(self) -> str:
        return dist_versions("torch", "transformers")

    def check_available(self, hardware) -> None:
        import torch

        if hardware.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("hardware.device", f"'{hardware.device}' needs a CUDA GPU and torch sees none",
                            "use hardware=cpu on this machine")

    def load(self, artifact, model, hardware) -> TorchLoaded:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(hardware.threads)
        gguf = [f for f in artifact.manifest["weight_files"] if f.endswith(".gguf")]
        if gguf:  # transformers dequantizes the file: its stored weights, computed in fp32 by torch
            hf_model = AutoModelForCausalLM.from_pretrained(
                artifact.path, gguf_file=gguf[0], dtype=torch.float32, device_map=hardware.device).eval()
            return TorchLoaded(hf_model, hardware.device)
        # a format may ask for another compute dtype on CPU (e.g. fp32 for an fp16 checkpoint: AVX2 fp16 is slow)
        dtype = artifact.manifest.get("cpu_compute_dtype") if hardware.device == "cpu" else None
        hf_model = AutoModelForCausalLM.from_pretrained(
            artifact.path, dtype=dtype or "auto", use_safetensors=not model.allow_pickle,
            trust_remote_code=model.trust_remote_code, device_map=hardware.device,
        ).eval()
        return TorchLoaded(hf_model, hardware.device)
