"""bf16 autocast on CPUs with native bf16 units: the detection, and training runs that use it
(and record it) only where it is detected and `amp` is on."""

from __future__ import annotations

import pytest
import torch

import e2vpt_core.train.device as device
import e2vpt_core.train.preflight as preflight
from e2vpt_core import PromptConfig
from e2vpt_core.report import environment, html
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, train_run
from e2vpt_core.train.device import bf16_autocast

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx2 avx512f {extra}
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse sse2 avx2 avx512f {extra}
"""


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags the detection reads; the cached answer is dropped before and after,
    so neither this test nor the next sees another's flags."""
    def use(*names: str) -> None:
        monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset(names))
        device._native_cpu_bf16.cache_clear()

    device._native_cpu_bf16.cache_clear()
    yield use
    device._native_cpu_bf16.cache_clear()


@pytest.mark.parametrize("names", [("amx_bf16",), ("avx512_bf16",),
                                   ("avx512f", "amx_tile", "amx_bf16", "avx512_bf16")])
def test_a_cpu_with_native_bf16_units_uses_autocast(flags, names):
    flags(*names)
    assert bf16_autocast(torch.device("cpu")) is True


@pytest.mark.parametrize("names", [(), ("avx512f", "avx2", "amx_tile", "avx512_vnni"),
                                   ("bf16",)])  # ARM's flag: not read, bf16 not natively fast
def test_a_cpu_without_them_trains_in_fp32(flags, names):
    flags(*names)
    assert bf16_autocast(torch.device("cpu")) is False


def test_the_flags_are_read_from_cpuinfo(flags, monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(device, "_CPUINFO", cpuinfo)
    assert device._cpu_flags() == frozenset()  # no such file (macOS, Windows)
    assert bf16_autocast(torch.device("cpu")) is False
    device._native_cpu_bf16.cache_clear()
    cpuinfo.write_text(CPUINFO.format(extra="avx512_bf16 amx_tile"))
    assert {"avx512_bf16", "amx_tile", "sse2"} <= device._cpu_flags()
    assert "spectre_v1" not in device._cpu_flags()  # another line's words
    assert bf16_autocast(torch.device("cpu")) is True
    device._native_cpu_bf16.cache_clear()
    cpuinfo.write_text(CPUINFO.format(extra="avx512_vnni"))
    assert bf16_autocast(torch.device("cpu")) is False


def test_the_answer_is_cached(flags, monkeypatch):
    calls = []
    monkeypatch.setattr(device, "_cpu_flags", lambda: calls.append(1) or frozenset({"amx_bf16"}))
    for _ in range(3):
        assert bf16_autocast(torch.device("cpu")) is True
    assert len(calls) == 1


@pytest.mark.parametrize("present", [True, False])
def test_other_devices_do_not_read_the_cpu(flags, present):
    flags(*(("amx_bf16",) if present else ()))
    assert bf16_autocast(torch.device("cuda")) is True
    assert bf16_autocast(torch.device("cuda:1")) is True
    assert bf16_autocast(torch.device("mps")) is False
    assert bf16_autocast(torch.device("meta")) is False


@pytest.mark.parametrize(("native", "amp", "size"), [(True, True, 2), (True, False, 4),
                                                     (False, True, 4)])
def test_the_memory_estimate_counts_bf16_activations_only_under_autocast(
        flags, monkeypatch, tiny_backbone, native, amp, size):
    flags(*(("amx_bf16",) if native else ()))
    sizes = []
    real = preflight.estimate_memory

    def spy(model, input_size, batch, bytes_per_value):
        sizes.append(bytes_per_value)
        return real(model, input_size, batch, bytes_per_value)

    monkeypatch.setattr(preflight, "estimate_memory", spy)
    preflight.check_model(_config(tiny_backbone, amp=amp), 8, torch.device("cpu"))
    assert sizes == [size]


def _config(backbone: str, **changes) -> TrainConfig:
    values = dict(backbone=backbone, dataset="builtin:position", epochs=1, batch_size=200,
                  eval_splits=("val",), device="cpu", log_every=1,
                  prompt=PromptConfig("e2vpt", visual_prompt_len=4, kv_prompt_len=2,
                                      num_segments=4))
    values.update(changes)
    return TrainConfig(**values)


def _train(backbone: str, tmp_path, **changes) -> tuple[
        RunStore, str, list[tuple[bool, bool, torch.dtype]]]:
    """Train a tiny run; its store and id, and for every nn.Linear call (training and
    evaluation) whether the model was in training mode, whether CPU autocast was on, and the
    output's dtype."""
    seen: list[tuple[bool, bool, torch.dtype]] = []

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear):
            seen.append((module.training, torch.is_autocast_enabled("cpu"), output.dtype))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        store = RunStore(tmp_path / "store")
        result = train_run(_config(backbone, **changes), store)
    finally:
        handle.remove()
    assert result.status == "completed", result.reason
    return store, result.run_id, seen


def test_a_run_on_a_native_bf16_cpu_trains_under_autocast_and_records_it(
        flags, tmp_path, tiny_backbone):
    flags("amx_bf16")
    store, run_id, seen = _train(tiny_backbone, tmp_path)
    summary = store.get_run(run_id)["summary"]
    assert summary["precision"] == "bf16 autocast"
    assert environment.recorded(summary)["precision"] == "bf16 autocast"
    table = html._environment(store, [run_id], {run_id: "the run"})
    recorded = table.split("What the runs recorded", 1)[1]
    assert "<th>precision</th>" in recorded and "bf16 autocast" in recorded
    training = [call for call in seen if call[0]]
    evaluation = [call for call in seen if not call[0]]
    assert training and evaluation
    assert all(on and dtype == torch.bfloat16 for _, on, dtype in training)
    assert all(on and dtype == torch.bfloat16 for _, on, dtype in evaluation)


@pytest.mark.parametrize(("native", "amp"), [(True, False), (False, True)])
def test_a_run_without_autocast_trains_in_fp32_and_records_it(
        flags, tmp_path, tiny_backbone, native, amp):
    flags(*(("amx_bf16",) if native else ()))
    store, run_id, seen = _train(tiny_backbone, tmp_path, amp=amp)
    summary = store.get_run(run_id)["summary"]
    assert summary["precision"] == "fp32"
    assert environment.recorded(summary)["precision"] == "fp32"
    assert any(training for training, _, _ in seen)
    assert seen and all(not on and dtype == torch.float32 for _, on, dtype in seen)


def test_the_official_preset_trains_in_fp32_on_a_native_bf16_cpu(flags, tmp_path,
                                                                  tiny_backbone):
    flags("amx_bf16")
    store, run_id, seen = _train(tiny_backbone, tmp_path, preset="official")
    assert store.get_run(run_id)["summary"]["precision"] == "fp32"
    assert seen and all(not on for _, on, _ in seen)


def test_a_summary_without_precision_reads_as_before():
    assert environment.recorded({"environment": {"torch": "2.0"}}) == {"torch": "2.0"}
    assert environment.recorded({"precision": "fp32"}) is None
