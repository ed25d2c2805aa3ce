"""llama.cpp's own tools (llama-server, llama-bench, llama-perplexity): where they are, and how they are built.

They are built from the llama.cpp sources vendored in the sdist of the installed llama-cpp-python (the code the
llama_cpp engine runs), which `make venv` keeps in <venv>/share/qrun/sdists, so no network is needed. The build
uses GGML_NATIVE=ON, like the venv's llama-cpp-python: such a binary may not run on another CPU, so the build
folder is keyed by the llama-cpp-python version and a short hash of this CPU's flags, the compiler and, where
CUDA's compiler `nvcc` is found (on PATH, or under $CUDA_HOME/bin) and the NVIDIA driver is loaded (or
LLAMA_CPP_CUDA=1 asks for it), its version: there the tools are built with -DGGML_CUDA=ON, so llama-server
offloads layers to the GPUs (a CPU-only build would ignore --n-gpu-layers):

    ~/.cache/qrun/llama.cpp/<version>-<hash>[-cuda]/build/bin/<tool>

QRUN_LLAMA_CPP_BIN_DIR names a folder of binaries built elsewhere (it then wins over the cache).
"""

import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Iterable, List, Optional

BIN_DIR_ENV = "QRUN_LLAMA_CPP_BIN_DIR"
CACHE_ROOT = Path.home() / ".cache" / "qrun" / "llama.cpp"
SDISTS = Path(sys.prefix) / "share" / "qrun" / "sdists"
BUILD_HINT = "make llama-server"
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_OPENSSL=OFF",  # no HTTPS model downloads: the runner passes local files
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # it would fetch the web UI at configure time; the server runs without it
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
]


def version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86 / arm
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return cxx


CUDA_ENV = "LLAMA_CPP_CUDA"  # 1: build with CUDA (make venv-gpu sets it), 0: never; unset: where a GPU driver runs
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def nvcc() -> Optional[Path]:
    """CUDA's compiler for a CUDA build of the tools; None for a CPU-only build. A machine may carry the CUDA toolkit
    without a GPU (a CUDA build there would not start: no libcuda), so unless LLAMA_CPP_CUDA=1 asks for it, CUDA is
    used only where the NVIDIA driver is loaded too. The compiler: on PATH, else $CUDA_HOME/bin/nvcc."""
    wanted = os.environ.get(CUDA_ENV)
    if wanted == "0" or (wanted != "1" and not NVIDIA_DRIVER.exists()):
        return None
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidate = Path(cuda_home) / "bin" / "nvcc" if cuda_home else None
    return candidate if candidate is not None and os.access(candidate, os.X_OK) else None


def _nvcc_version(path: Path) -> str:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True).stdout
        return out.strip().splitlines()[-1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return str(path)


def cmake_flags() -> List[str]:
    """CMAKE_FLAGS, plus the CUDA backend where nvcc exists (its path given, so cmake needs no PATH change)."""
    compiler = nvcc()
    if compiler is None:
        return list(CMAKE_FLAGS)
    return [*CMAKE_FLAGS, "-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={compiler}"]


def home() -> Path:
    """This machine's build folder for the installed llama-cpp-python version (a CUDA build's ends in -cuda)."""
    compiler = nvcc()
    cuda = f"\n{_nvcc_version(compiler)}" if compiler else ""
    key = hashlib.sha256(f"{_cpu_flags()}\n{_compiler()}{cuda}".encode()).hexdigest()[:10]
    return CACHE_ROOT / f"{version()}-{key}{'-cuda' if compiler else ''}"


def built_with_cuda(binary_path: Path) -> Optional[bool]:
    """Whether the tool at binary_path was built with the CUDA backend, from its build folder's CMakeCache.txt; None
    where that is not known (a binary from QRUN_LLAMA_CPP_BIN_DIR without its build folder)."""
    cache = Path(binary_path).parent.parent / "CMakeCache.txt"
    if not cache.is_file():
        return None
    return any(line.strip() in ("GGML_CUDA:BOOL=ON", "GGML_CUDA:BOOL=1") for line in cache.read_text().splitlines())


def binary(tool: str) -> Optional[Path]:
    """The built tool (e.g. "llama-server"), or None when it is not built for this machine."""
    override = os.environ.get(BIN_DIR_ENV)
    candidates = [Path(override) / tool] if override else []
    candidates.append(home() / "build" / "bin" / tool)
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def _sources() -> Path:
    """llama.cpp's sources, unpacked from the venv's llama-cpp-python sdist into the build folder once."""
    name = f"llama_cpp_python-{version()}"
    src = home() / name / "vendor" / "llama.cpp"
    if not src.exists():
        archive = SDISTS / f"{name}.tar.gz"
        if not archive.exists():
            raise FileNotFoundError(f"{archive} is missing: `make venv` downloads it")
        home().mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(home(), filter="data")
    return src


def build(targets: Iterable[str], jobs: int = 2) -> None:
    """Configure once, then build the named cmake targets (llama-server, llama-bench, llama-perplexity)."""
    src, out = _sources(), home() / "build"
    if not (out / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(src), "-B", str(out), *cmake_flags()], check=True)
    subprocess.run(["cmake", "--build", str(out), "-j", str(jobs), "--target", *targets], check=True)


def main() -> None:
    """`python -m runner.system.llama_cpp_tools [--jobs N] TARGET...`: build what is not built yet, print paths."""
    args = sys.argv[1:]
    jobs = 2
    if args[:1] == ["--jobs"]:
        jobs, args = int(args[1]), args[2:]
    targets = args or ["llama-server"]
    todo = [t for t in targets if binary(t) is None]
    if todo:
        print(f"building {' '.join(todo)} in {home()} (10-15 min on 2 cores, once)", file=sys.stderr, flush=True)
        build(todo, jobs)
    for t in targets:
        print(binary(t))


if __name__ == "__main__":
    main()
