"""Where libraries' chatter goes: into the job's log file (Hydra's `<job>.log`, logged with the MLflow run),
not onto the console.

- llama.cpp's native log (model loader dumps, ~180 "falling back to q4_0" lines per quantize on a model whose
  widths are not multiples of 256): through `llama_log_set`, so C-level output needs no fd juggling. Only
  its ERROR lines stay on the console.
- Known-harmless import-time warnings (HARMLESS below): a filter on the logger that emits them moves the
  record to the job log. Anything else those libraries log stays where it was.
- gptqmodel's LogBar (its banner, INFO lines, config dumps and timing tables, printed straight to stdout):
  LogBar's one log entry point is wrapped once `logbar` is imported, so lines below WARNING (and the
  LOGBAR_HARMLESS warnings) go to the job log. Its progress bars and real warnings stay on the console.
  What it print()s itself (the saved config after every save) is moved with `stdout_to_job_log` around the call.
- vLLM's log, written by its worker process (runner/engines/vllm.py): every line, through `to_job_log`; the engine
  reads what vLLM reports (KV cache size, maximum concurrency, attention backend) from the same lines.

Without a log file (hydra/job_logging=none, a plain script) nothing is moved.
"""

import contextlib
import ctypes
import importlib.abc
import importlib.util
import io
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
    "tokenicer.tokenicer": r"Auto fixed pad_token_id",  # gptqmodel's tokenizer wrapper, at every model load
}

# Loggers whose INFO lines are progress chatter (auto-round: peak RAM and loss per block; the runner's cache: each
# entry built or waited for): below WARNING they go to the job log; their warnings stay on the console.
CHATTY_BELOW_WARNING = ("autoround", "runner.cache", "runner.cache.lock")

# LogBar (gptqmodel's logger) warnings that ask nothing of the user: free-threaded Python only speeds up multi-GPU
# MoE quantization and CPU packing.
LOGBAR_HARMLESS = r"Python GIL is enabled"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

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
    def __init__(self, pattern: str, below: int = 0):
        super().__init__()
        self.pattern, self.below = re.compile(pattern), below

    def filter(self, record: logging.LogRecord) -> bool:
        if not job_log_files() or not self.pattern.search(record.getMessage()):
            return True
        if self.below and record.levelno >= self.below:
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
    moves = [(name, _MoveHarmless(pattern)) for name, pattern in HARMLESS.items()]
    moves += [(name, _MoveHarmless("", below=logging.WARNING)) for name in CHATTY_BELOW_WARNING]
    for name, move in moves:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _MoveHarmless) for f in logger.filters):
            logger.addFilter(move)
    for module, route in (("llama_cpp", route_llama_cpp_log), ("logbar", route_logbar)):
        if module in sys.modules:
            route()
        elif not any(isinstance(f, _AfterImport) and f.name == module for f in sys.meta_path):
            sys.meta_path.insert(0, _AfterImport(module, route))


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
            if found := _FLASH_ATTENTION.search(line):
                FLASH_ATTENTION_RESOLVED.append(found.group(1))
            if self.level >= logging.ERROR or not job_log_files():
                self.native.log(self.level, line)  # propagates to the console (and the file)
            else:
                _library_logger().log(self.level, "llama.cpp: %s", line)


_LLAMA_CALLBACK = None  # the ctypes function object must outlive every llama.cpp call
# "resolve_fused_ops: Flash Attention enabled": how llama.cpp resolved its default (auto) for a new context. It has
# no API that says so; runner/engines/llama_cpp.py reads the entries each context adds.
_FLASH_ATTENTION = re.compile(r"Flash Attention (enabled|disabled)\b")
FLASH_ATTENTION_RESOLVED: List[str] = []


def route_llama_cpp_log() -> None:
    """Install the llama.cpp log callback (idempotent). Imports llama_cpp: call it where llama.cpp is used."""
    global _LLAMA_CALLBACK
    import llama_cpp  # importing it installs llama-cpp-python's own callback (prints to stderr): replaced below

    if _LLAMA_CALLBACK is None:
        _LLAMA_CALLBACK = llama_cpp.llama_log_callback(_LlamaCppLog())
    llama_cpp.llama_log_set(_LLAMA_CALLBACK, ctypes.c_void_p(0))


def route_logbar() -> None:
    """Wrap LogBar's log entry point (idempotent): below WARNING, and LOGBAR_HARMLESS, to the job log when there is
    one."""
    from logbar import LogBar

    original = LogBar._process
    if getattr(original, "_qrun_routed", False):
        return
    harmless = re.compile(LOGBAR_HARMLESS)

    def _process(self, level, msg, *args, **kwargs):
        if job_log_files():
            number = self._normalize_level(level)
            text = self._format_message(msg, args)
            if self.isEnabledFor(number) and (number < logging.WARNING or harmless.search(text)):
                _library_logger().log(number, "%s: %s", self.name, _ANSI.sub("", text))
                return None
        return original(self, level, msg, *args, **kwargs)

    _process._qrun_routed = True
    LogBar._process = _process


class _LinesToJobLog(io.TextIOBase):
    def __init__(self, source: str):
        self.source, self.pending = source, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in filter(str.strip, lines):
            _library_logger().info("%s: %s", self.source, _ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.write("\n")


def to_job_log(source: str, line: str) -> None:
    """One line a library wrote in another process (vLLM's worker, on its stderr) into the job log, at INFO; nothing
    where there is no job log (the caller keeps its own copy)."""
    text = _ANSI.sub("", line).rstrip()
    if text and job_log_files():
        _library_logger().info("%s: %s", source, text)


@contextlib.contextmanager
def stdout_to_job_log(source: str):
    """What a library print()s to stdout inside the block goes to the job log (as is where there is none)."""
    if not job_log_files():
        yield
        return
    sink = _LinesToJobLog(source)
    with contextlib.redirect_stdout(sink):
        yield
    sink.flush()
