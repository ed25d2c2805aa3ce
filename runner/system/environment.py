"""What besides the config changes a run's numbers: the runner's code, library versions, the host.

These facts are tags on every run and part of the resume key (runner.job.job_key). The resume check
runs before any work, so this module stays light: it never imports torch (versions come from
importlib.metadata, the GPU model from the NVIDIA driver's /proc files unless torch is loaded anyway).
"""

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from runner.paths import PROJECT_DIR
from runner.system.hashing import sha256_bytes
from runner.system.packages import versions

# CPU features that decide which kernels llama.cpp, torch and oneDNN run (and so their speed)
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


@functools.cache  # the code a process runs is the code it imported: read git once
def code_identity(project_dir: Path = PROJECT_DIR) -> Dict[str, str]:
    """git sha + dirty flag (+ a hash of the diff of tracked files), or the package version outside a checkout."""
    from runner import __version__

    top = _git(project_dir, "rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != Path(project_dir).resolve():  # an install, maybe inside someone's repo
        return {"version": __version__}
    diff = _git(project_dir, "diff", "HEAD", "--binary")
    return {
        "version": __version__,
        "git_sha": _git(project_dir, "rev-parse", "HEAD"),
        "dirty": str(bool(diff)).lower(),
        "diff_sha256": sha256_bytes(diff.encode()) if diff else "",
    }


def host_identity() -> Dict[str, str]:
    return {"cpu": cpu_name(), "cpu_flags": ",".join(cpu_flags()), "gpu": ", ".join(gpu_names())}


def environment_tags(project_dir: Path = PROJECT_DIR) -> Dict[str, str]:
    from runner import __version__

    code = code_identity(project_dir)
    found = versions("torch", "transformers")
    tags = {
        "git.sha": code.get("git_sha", "unknown"),
        "git.dirty": code.get("dirty", "unknown"),
        "version.torch": found["torch"],
        "version.transformers": found["transformers"],
        "version.python": platform.python_version(),
        "version.quant_runner": __version__,
        "host.cpu": cpu_name(),
        "host.cpu_count": str(os.cpu_count()),
        "host.cpu_flags": ",".join(cpu_flags()) or "none",
        "host.gpu": ", ".join(gpu_names()) or "none",
    }
    if code.get("diff_sha256"):
        tags["git.diff_sha256"] = code["diff_sha256"]
    return tags


def _git(cwd: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> List[str]:
    """The KERNEL_FLAGS this CPU has, read at run time (Linux; empty elsewhere)."""
    have = set(_cpuinfo_field("flags").split())
    return [f for f in KERNEL_FLAGS if f in have]


def gpu_names() -> List[str]:
    """Distinct NVIDIA GPU models of the host, from the driver's /proc files; torch only if already imported."""
    names = set()
    for info in Path("/proc/driver/nvidia/gpus").glob("*/information"):
        try:
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    names.add(line.split(":", 1)[1].strip())
        except OSError:
            continue
    torch = sys.modules.get("torch")
    if not names and torch is not None and torch.cuda.is_available():  # e.g. ROCm, or no /proc in a container
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    return sorted(names)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: taskset, cgroups, SLURM), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# File systems whose locks SQLite cannot rely on (sqlite.org, "How To Corrupt An SQLite Database File")
NETWORK_FILESYSTEMS = ("nfs", "cifs", "smb", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "sshfs", "9p")


def network_filesystem(path: Path, mounts: Optional[str] = None) -> Optional[str]:
    """The type of the network file system `path` lives on (its longest mount point in /proc/mounts), else None."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target, best, kind = str(Path(path).resolve()), "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    base = kind.split(".")[-1] if kind.startswith("fuse.") else kind  # fuse.glusterfs, fuse.ceph-fuse
    return kind if any(base.startswith(n) for n in NETWORK_FILESYSTEMS) else None
