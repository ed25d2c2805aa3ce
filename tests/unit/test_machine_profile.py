"""The hardware profile checked against the machine's GPUs (runner/config/machine.py), with NVML faked: no GPU here."""

from types import SimpleNamespace

import pytest

from helpers import compose
from runner.config.machine import check_machine
from runner.errors import UserError
from runner.system.gpu import Gpu, machine_gpus

GIB = 1024**3
RTX3090 = "NVIDIA GeForce RTX 3090"
H100 = "NVIDIA H100 80GB HBM3"


class FakeNvml:
    """pynvml's calls machine_gpus makes, answering a fixed set of cards."""

    def __init__(self, cards):
        self.cards = cards  # [(name, total bytes)]

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return self.cards[h][0].encode()  # older pynvml answers bytes

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=self.cards[h][1], used=0, free=self.cards[h][1])


class NoDriver(FakeNvml):
    def nvmlInit(self):
        raise RuntimeError("NVML Shared Library Not Found")


def _hardware(name, *overrides):
    return compose([f"hardware={name}", *overrides]).hardware


def _gpus(cards):
    return machine_gpus(FakeNvml(cards))


def test_nvml_answers_names_and_memory_per_card(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _gpus([(RTX3090, 24 * GIB)]) == [Gpu(0, RTX3090, 24 * GIB)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert _gpus([(RTX3090, 24 * GIB), (H100, 80 * GIB)]) == [Gpu(1, H100, 80 * GIB)]
    assert machine_gpus(NoDriver([])) == []


def test_the_machine_the_profile_describes_passes(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    check_machine(_hardware("rtx3090x2"), _gpus([(RTX3090, 24 * GIB)] * 2))
    check_machine(_hardware("h100"), _gpus([(H100, 79.6 * GIB)]))
    check_machine(_hardware("cuda"), _gpus([(H100, 79.6 * GIB)]))  # the generic profile: any card its size or more
    check_machine(_hardware("cpu"), [])


def test_two_h100s_do_not_pass_as_rtx3090x2(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(UserError) as e:
        check_machine(_hardware("rtx3090x2"), _gpus([(H100, 79.6 * GIB)] * 2))
    line = str(e.value)
    assert e.value.key == "hardware" and "\n" not in line
    assert "hardware=rtx3090x2 expects 2 x RTX 3090 (24.0 GiB each)" in line
    assert f"this machine has 2 x {H100} (79.6 GiB each)" in line
    assert e.value.fix.startswith("use hardware=h100")


def test_too_few_cards_or_too_small_ones(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(UserError, match="expects 2 x RTX 3090"):
        check_machine(_hardware("rtx3090x2"), _gpus([(RTX3090, 24 * GIB)]))
    with pytest.raises(UserError) as e:
        check_machine(_hardware("cuda"), _gpus([("NVIDIA GeForce RTX 4060", 8 * GIB)]))
    assert "gpu_name: 'RTX 4060', gpu_memory_bytes: 8589934592" in e.value.fix  # no profile fits: how to write one


def test_a_cuda_profile_on_a_machine_without_gpus_is_one_hardware_line():
    with pytest.raises(UserError) as e:
        check_machine(_hardware("rtx3090x2"), machine_gpus(NoDriver([])))
    assert e.value.key == "hardware"
    assert "this machine has no GPU" in str(e.value) and e.value.fix.startswith("use hardware=cpu")
