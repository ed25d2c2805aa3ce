"""Where libraries' chatter goes: into the job's log file (Hydra's `<job>.log`, logged with the MLflow run),
not onto the console.

- llama.cpp's native log (model loader dumps, ~180 "falling back to q4_0" lines per quantize on a model whose
  widths are not multiples of 256): through `llama_log_set`, so C-level output needs no fd juggling. Only
  its ERROR lines stay on the console.
- Known-harmless import-time warnings (HARMLESS below): a filter on the logger that emits them moves the
  record to the job log. Anything else those libraries log stays where it was.

Without a log file (hydra/job_logging=none, a plain script) nothing is moved.
"""
import ctypes
import importlib.abc
import importlib.util
import logging
import re
import sys
from typing import List

LIBRARY_LOGGER = "qrun.library"

# logger that emits it -> what the message says. Each is printed at import on a CPU-only machine and asks
# nothing of the user: CUDA-only kernels that cannot load, optional packages not installed, torch
# deprecation notices about how a library registers its enums.
HARMLESS = {
    "torchao": r"Failed to load .*\.so",
    "torchao.kernel.intmm": r"no triton",
    "torch.utils._pytree": r"register_constant",
    "bitsandbytes.backends.cpu.ops": r"kernels-community|pip install kernels",
}

# ggml_log_level as llama.cpp 0.3.36 numbers it (llama-cpp-python's own table predates DEBUG=1)
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_GGML_CONT = 5


def job_log_files() -> List[logging.FileHandler]:
    """The root logger's file handlers now: Hydra reconfigures logging for every job of a sweep."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


class _ToJobLog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        for handler in job_log_files():
            if record.levelno >= handler.level:
                handler.handle(record)


class _MoveHarmless(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        if not job_log_files() or not self.pattern.search(record.getMessage()):
            return True
        _library_logger().handle(record)
        return False


def _library_logger() -> logging.Logger:
    logger = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(h, _ToJobLog) for h in logger.handlers):
        logger.addHandler(_ToJobLog())
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    return logger


def route_library_logs() -> None:
    """Move the HARMLESS warnings to the job log, and llama.cpp's log as soon as llama_cpp is imported, wherever
    that happens (engine, quantize, tokenizer checks). Cheap, imports nothing: call it before the job's imports."""
    for name, pattern in HARMLESS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _MoveHarmless) for f in logger.filters):
            logger.addFilter(_MoveHarmless(pattern))
    if "llama_cpp" in sys.modules:
        route_llama_cpp_log()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("llama_cpp", route_llama_cpp_log))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `then()` once the module `name` has been imported (by anyone), then steps aside."""

    def __init__(self, name: str, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module, then = spec.loader.exec_module, self.then

            def exec_then(module):
                exec_module(module)
                then()

            spec.loader.exec_module = exec_then
        return spec


class _LlamaCppLog:
    """llama.cpp's log callback: whole lines to the job log (ERROR lines to the console as well)."""

    def __init__(self):
        self.pending, self.level = "", logging.INFO
        self.native = logging.getLogger("llama_cpp.native")

    def __call__(self, level: int, text: bytes, _user_data) -> None:
        if level != _GGML_CONT:
            self.level = _GGML_LEVELS.get(level, logging.INFO)
        self.pending += (text or b"").decode("utf-8", "replace")
        *lines, self.pending = self.pending.split("\n")
        for line in filter(str.strip, lines):
            if self.level >= logging.ERROR or not job_log_files():
                self.native.log(self.level, line)  # propagates to the console (and the file)
            else:
                _library_logger().log(self.level, "llama.cpp: %s", line)


_LLAMA_CALLBACK = None  # the ctypes function object must outlive every llama.cpp call


def route_llama_cpp_log() -> None:
    """Install the llama.cpp log callback (idempotent). Imports llama_cpp: call it where llama.cpp is used."""
    global _LLAMA_CALLBACK
    import llama_cpp  # importing it installs llama-cpp-python's own callback (prints to stderr): replaced below

    if _LLAMA_CALLBACK is None:
        _LLAMA_CALLBACK = llama_cpp.llama_log_callback(_LlamaCppLog())
    llama_cpp.llama_log_set(_LLAMA_CALLBACK, ctypes.c_void_p(0))
