"""OpenVINO engine: an OpenVINO IR folder (runner/formats/openvino.py) on OpenVINO's CPU plugin via optimum-intel.

OpenVINO lives in its own venv (.venv-openvino, `make venv-openvino`): optimum-intel 2.2.0 caps transformers below
5.6, the runner's venv pins 5.17.0. So the engine is a subprocess (runner/engines/workers/openvino_worker.py) run by
that
venv's python, spoken to with JSON lines, like the vLLM engine.

Eval: the worker runs each window as one forward from an empty KV cache and writes the log-softmax over the full
vocabulary (float32 [len, vocab]) to an .npy file that this side reads: exact full-vocabulary log-probs, so ppl,
KLD and top-1 are computed as for torch. The file lives in a private temp folder (in /dev/shm where there is one).
Precision: the format's `inference_precision` (default f32) is OpenVINO's INFERENCE_PRECISION_HINT; OpenVINO's
own default on CPUs with AVX512-BF16/AMX is bf16 activations, which adds its own error to the quantization's.
Activations: the format's `dynamic_quantization_group_size` (default 0: off) is OpenVINO's
DYNAMIC_QUANTIZATION_GROUP_SIZE; its CPU default quantizes activations to int8 in groups for compressed-weight
matmuls, measured on SmolLM2 INT8 (one 256-token window vs fp32) at ~1.6x the KLD of float activations.
Generation timing (benchmark): greedy, exactly new_tokens tokens; TTFT and total measured inside the worker.
"""

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

import runner
from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.engines.worker_client import JsonLinesWorker
from runner.errors import UserError
from runner.system.packages import versions_in

log = logging.getLogger(__name__)
ROOT = Path(runner.__file__).resolve().parent.parent
VENV_ENV = "QRUN_OPENVINO_VENV"  # another venv with openvino + optimum-intel instead of ROOT/.venv-openvino
WORKER = Path(__file__).with_name("workers") / "openvino_worker.py"
MAKE_TARGET = "make venv-openvino"
DISTS = ("openvino", "nncf", "optimum_intel")


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or ROOT / ".venv-openvino")


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def installed_versions() -> Optional[Dict[str, str]]:
    """{'openvino': '2026.4.1', ...} from the venv's dist-info without starting its python; None if one is missing."""
    found = versions_in(venv_dir(), DISTS)
    return found if len(found) == len(DISTS) and venv_python().exists() else None


def require_venv(key: str = "format.engine") -> Dict[str, str]:
    found = installed_versions()
    if found is None:
        raise UserError(
            key,
            f"OpenVINO runs in its own venv and {venv_dir()} has no openvino + nncf + optimum-intel",
            f"{MAKE_TARGET} (or point {VENV_ENV} at a venv with them)",
        )
    return found


def worker_env(threads: int) -> Dict[str, str]:
    """os.environ without the runner venv's python paths; offline; the profile's threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {
        **env,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }


def run_export(settings: dict, threads: int) -> dict:
    """The export + compression in the OpenVINO venv; its JSON report (the worker's last stdout line)."""
    cmd = [str(venv_python()), str(WORKER), "export", json.dumps(settings)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(threads), cwd=str(ROOT))
    log.debug("openvino export output:\n%s", proc.stderr[-20000:])
    if proc.returncode != 0:
        tail = [l for l in (proc.stderr + proc.stdout).strip().splitlines() if l.strip()][-1:] or ["no output"]
        raise RuntimeError(f"the OpenVINO export failed (exit {proc.returncode}): {tail[0][-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class WorkerProcess(JsonLinesWorker):
    """The OpenVINO worker (runner/engines/workers/openvino_worker.py serve) in .venv-openvino."""

    def __init__(self, settings: dict, threads: int, label: str):
        super().__init__(
            "OpenVINO",
            venv_python(),
            WORKER,
            ["serve", json.dumps(settings)],
            {**worker_env(threads), "PYTHONPATH": str(ROOT)},
            ROOT,
            label,
        )

    def close(self, timeout_s: float = 60.0) -> None:
        code, _ = self.stop(timeout_s)
        if code:
            raise RuntimeError(
                f"the OpenVINO worker ({self.label}) exited with code {code}; its last output:\n" + self.last_output()
            )


class OpenvinoLoaded(LoadedModel):
    engine = "openvino"

    def __init__(self, path: Path, hardware, runtime: Dict[str, object], label: str):
        shm = Path("/dev/shm")
        self.tmp = Path(tempfile.mkdtemp(prefix="qrun-openvino-", dir=shm if shm.is_dir() else None))
        settings = {"model": str(path), "threads": int(hardware.threads), **runtime}
        try:
            self.worker = WorkerProcess(settings, int(hardware.threads), label)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        out = self.tmp / "logprobs.npy"
        self.worker.call(op="logprobs", ids=[int(t) for t in input_ids], out=str(out))
        try:
            return np.load(out)
        finally:
            out.unlink(missing_ok=True)

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        out = self.worker.call(op="generate", ids=[int(t) for t in prompt_ids], new_tokens=int(new_tokens))
        return GenerationTiming(ttft_s=out["ttft_s"], total_s=out["total_s"], new_tokens=out["new_tokens"])

    def close(self) -> None:
        try:
            if self.worker is not None:
                self.worker.close()
                self.worker = None
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


class OpenvinoEngine(Engine):
    NAME = "openvino"

    def version(self) -> str:
        found = installed_versions()
        return ", ".join(f"{k} {v}" for k, v in found.items()) if found else "openvino (not installed)"

    def check_available(self, hardware, what: str = "the openvino engine") -> None:
        if str(hardware.device).startswith("cuda"):
            raise UserError(
                "format.engine", f"{what} runs OpenVINO's CPU plugin, not hardware={hardware.name}", "use hardware=cpu"
            )
        require_venv()

    def check_artifact(self, artifact) -> None:
        if not (Path(artifact.path) / "openvino_model.xml").exists():
            raise UserError(
                "format.engine",
                f"{artifact.path} holds no OpenVINO IR (openvino_model.xml)",
                "use format=openvino_int8 or openvino_int4 with format.engine=openvino",
            )

    def load(self, artifact, model, hardware, context_tokens: Optional[int] = None) -> OpenvinoLoaded:
        self.check_available(hardware)
        if not getattr(artifact, "checked", False):
            self.check_artifact(artifact)
        manifest = artifact.manifest
        runtime = {k: manifest.get(k) for k in ("inference_precision", "dynamic_quantization_group_size")}
        return OpenvinoLoaded(Path(artifact.path), hardware, runtime, label=str(manifest.get("format", "?")))
