"""Bad arguments are refused before a run exists, and every command uses the store the
user means (issue 14, items 4 and 8)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import last_json
from data_fixtures import make_vtab_task

from e2vpt_core.cli import main
from e2vpt_core.config import PromptConfig
from e2vpt_core.store import RunStore
from e2vpt_core.train import TrainConfig, preflight


@pytest.fixture(autouse=True)
def no_store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No E2VPT_STORE from the environment; a private cache of verified datasets."""
    monkeypatch.delenv("E2VPT_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _refused(args: list[str], store: Path, capsys: pytest.CaptureFixture) -> str:
    """Run `e2vpt train ...`; assert exit 2, one stderr line and an untouched store."""
    store.mkdir(exist_ok=True)
    code = main(["train", "--epochs", "1", "--store", str(store), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("e2vpt train: error:"), err
    assert list(store.iterdir()) == [], "a refused config left something in the store"
    return err


# --- item 8: argument errors, refused before any run ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "inf"], "base_lr=inf must be a finite number"),
        (["--lr", "nan"], "base_lr=nan must be a finite number"),
        (["--wd", "inf"], "weight_decay=inf must be a finite number"),
        (["--grad-clip", "nan"], "grad_clip=nan must be a finite number"),
        (["--workers", "-1"], "num_workers=-1 is out of range"),
        (["--num-segments", "7"], "num_segments=7 must divide the backbone width"),
        (["--batch-size", "801"], "batch size 801 is larger than the training split"),
        (["-P", "100000"], "P=100000, T=5 with a batch of 64"),
        (["-T", "100000"], "P=10, T=100000 with a batch of 64"),
        (["--device", "tpu9"], "device 'tpu9' is not a device"),
    ],
)
def test_bad_argument_creates_no_run(args: list[str], message: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(preflight, "memory_total", lambda _device: 16 << 30)  # a 16 GiB machine
    err = _refused(args, tmp_path / "store", capsys)
    assert message in err
    if "grad_clip" in message:
        assert "learning rate" not in err


def test_cuda_without_a_gpu_creates_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert "no CUDA GPU is available" in _refused(["--device", "cuda"], tmp_path / "s", capsys)


def test_batch_not_divisible_by_the_processes_creates_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")  # what torchrun sets; checked before any rank starts
    assert "not divisible by the 3 processes" in _refused(["--batch-size", "64"],
                                                          tmp_path / "s", capsys)


def test_huge_prompts_are_refused_by_the_memory_estimate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    device = torch.device("cpu")
    monkeypatch.setattr(preflight, "memory_total", lambda _device: 1 << 50)  # 1 PiB
    preflight.check_model(TrainConfig(prompt=PromptConfig(visual_prompt_len=100000)), 10,
                          device)  # fits such a machine
    monkeypatch.setattr(preflight, "memory_total", lambda _device: 32 << 20)  # 32 MiB
    with pytest.raises(ValueError, match=r"needs about .* GiB .* more than the 0.0 GiB"):
        preflight.check_model(TrainConfig(), 10, device)  # the default does not fit 32 MiB


def test_remove_mode_is_estimated_like_zero_mode() -> None:
    config = TrainConfig(prompt=PromptConfig(prune_mode="remove", masks_per_block=True))
    preflight.check_model(config, 10, torch.device("cpu"))  # its forward cannot run on meta


def test_the_estimate_grows_with_prompts_and_batch() -> None:
    from e2vpt_core.models import build_backbone, create_model

    def estimate(prompt: PromptConfig, batch: int) -> int:
        with torch.device("meta"):
            model = create_model(build_backbone("builtin-vit-tiny"), 10, prompt)
        return preflight.estimate_memory(model, (3, 32, 32), batch, 4)[0]

    small, long_p = estimate(PromptConfig(), 8), estimate(PromptConfig(visual_prompt_len=1000), 8)
    long_t = estimate(PromptConfig(kv_prompt_len=1000), 8)
    assert long_p > 5 * small and long_t > 2 * small
    assert estimate(PromptConfig(), 16) > 1.8 * small


def test_offline_hub_name_fails_fast_with_the_checkpoint_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import huggingface_hub

    asked: list[str] = []
    monkeypatch.setattr(preflight, "_reachable", lambda host: asked.append(host) or False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    start = time.monotonic()
    err = _refused(["--backbone", "vit_tiny_patch16_224.augreg_in21k"], tmp_path / "s", capsys)
    assert time.monotonic() - start < 30
    assert asked == ["huggingface.co"]
    assert "--checkpoint FILE" in err and "cannot be reached" in err


def test_corrupt_image_in_any_split_creates_no_run(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    task = make_vtab_task(tmp_path / "data")
    victim = task / "images/test/000001.jpg"
    victim.write_bytes(b"\xff\xd8\xff garbage")
    err = _refused(["--dataset", f"vtab:{task}", "--batch-size", "2"], tmp_path / "s", capsys)
    assert f"{victim} (listed at {task / 'test.txt'}:2)" in err


# --- item 4: the store -------------------------------------------------------------------


def test_store_from_the_environment_is_used_and_named(
    tmp_path: Path, tiny_backbone: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    elsewhere, store = tmp_path / "elsewhere", tmp_path / "app-store"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("E2VPT_STORE", str(store))
    args = ["train", "--backbone", tiny_backbone, "-P", "2", "-T", "1", "--num-segments", "4",
            "--epochs", "1", "--batch-size", "100", "--json", "--quiet"]
    assert main(args) == 2  # named, missing, not asked to create
    assert "does not exist; pass --create-store" in capsys.readouterr().err
    assert not store.exists()

    assert main([*args, "--create-store"]) == 0
    captured = capsys.readouterr()
    run_id = last_json(captured.out)["run_id"]
    assert RunStore(store).get_run(run_id)["status"] == "completed"
    assert captured.err.strip().splitlines()[-1] == f"e2vpt train: store {store}"
    assert list(elsewhere.iterdir()) == [], "a ./runs appeared in the working directory"

    assert main(["runs", "--json"]) == 0
    captured = capsys.readouterr()
    assert [row["id"] for row in last_json(captured.out)] == [run_id]
    assert captured.err.strip() == f"e2vpt runs: store {store}"


def test_named_missing_store_is_not_created(tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "typo"
    assert main(["train", "--epochs", "1", "--store", str(missing)]) == 2
    assert f"run store {missing} (named by --store) does not exist" in capsys.readouterr().err
    assert main(["runs", "--store", str(missing)]) == 2
    assert f"no run store at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_reading_commands_never_create_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["runs"], ["export", "some-run", "out"], ["resume", "some-run"]):
        assert main(args) == 2
        assert f"no run store at {tmp_path / 'runs'}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_worker_uses_the_store_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from e2vpt_core import jobs

    elsewhere, store = tmp_path / "elsewhere", tmp_path / "app-store"
    elsewhere.mkdir()
    store.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("E2VPT_STORE", str(store))
    assert jobs.main(["--idle-exit", "0", "--poll", "0.01"]) == 0
    assert (store / "store.sqlite").is_file()
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("command", ["sweep", "protocol"])
@pytest.mark.parametrize(("flag", "value"), [("--lrs", "inf"), ("--wds", "nan")])
def test_bad_grid_value_creates_no_run(command: str, flag: str, value: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "store"
    store.mkdir()
    code = main([command, "--epochs", "1", "--store", str(store), "--quiet", "--seeds", "0",
                 flag, "1.0", value])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "must be a finite number" in err, err
    assert RunStore(store).runs().empty


def test_bad_grid_epochs_creates_no_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "store"
    store.mkdir()
    code = main(["sweep", "--epochs", "2", "--grid-epochs", "0", "--store", str(store),
                 "--quiet", "--seeds", "0", "--lrs", "1.0", "--wds", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "grid_epochs=0 must be at least 1" in err, err
    assert RunStore(store).runs().empty


def test_a_dataset_warning_is_one_line_shown_once(tmp_path: Path, tiny_backbone: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    task = make_vtab_task(tmp_path / "data")
    listing = task / "train800.txt"
    listing.write_text(listing.read_text() + listing.read_text().splitlines()[0] + "\n")
    store = tmp_path / "store"
    store.mkdir()
    assert main(["train", "--backbone", tiny_backbone, "-P", "2", "-T", "1", "--num-segments",
                 "4", "--dataset", f"vtab:{task}", "--batch-size", "2", "--epochs", "1",
                 "--workers", "0", "--store", str(store), "--quiet"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if ": warning: " in line]
    assert warned == [f"e2vpt train: warning: {listing}: 1 duplicate line(s), each counted "
                      "as a sample: line 7 repeats line 1"]


# --- issue 36 (the fault probe), items 4, 7 and 8c: refused before a run exists ----------


def test_an_image_above_the_pixel_limit_creates_no_run(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    from data_fixtures import make_folder_tree, write_image

    from e2vpt_core.data import common

    monkeypatch.setattr(common, "MAX_IMAGE_PIXELS", 25)  # the tree's images are 5 × 5
    root = make_folder_tree(tmp_path / "data", {"a": 4, "b": 4})
    big = write_image(root / "b" / "big.png", (1, 2, 3))  # 6 × 6
    err = _refused(["--dataset", f"folder:{root}", "--batch-size", "2"], tmp_path / "s", capsys)
    assert f"{big} (listed at " in err and "6 × 6 pixels, above the limit of 25" in err


def test_more_loader_workers_than_cpus_creates_no_run(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(preflight, "usable_cpus", lambda: 2)
    err = _refused(["--workers", "3"], tmp_path / "s", capsys)
    assert "--workers 3: more data-loading processes than the 2 CPU(s)" in err
    preflight.check_workers(TrainConfig(num_workers=2))  # as many as CPUs is fine
    preflight.check_workers(TrainConfig(num_workers=None))


def test_the_workers_bound_is_the_cpus_this_process_may_use() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    assert preflight.usable_cpus() == expected >= 1


def _weights(tmp_path: Path) -> dict[str, Path]:
    """Weight files in every format --checkpoint takes, and damaged ones."""
    import numpy as np
    from safetensors.torch import save_file

    state = {"weight": torch.ones(4, 4)}
    files = {name: tmp_path / name for name in (
        "zip.pth", "legacy.pth", "model.safetensors", "array.npy", "garbage.pth",
        "truncated.pth", "truncated.safetensors", "empty.pth")}
    torch.save(state, files["zip.pth"])
    torch.save(state, files["legacy.pth"], _use_new_zipfile_serialization=False)
    save_file(state, files["model.safetensors"])
    np.save(files["array.npy"], np.ones(3))
    files["garbage.pth"].write_bytes(os.urandom(256).replace(b"\x80", b"\x00"))
    files["truncated.pth"].write_bytes(files["zip.pth"].read_bytes()[:300])
    files["truncated.safetensors"].write_bytes(files["model.safetensors"].read_bytes()[:-8])
    files["empty.pth"].write_bytes(b"")
    return files


def test_readable_weights_pass_and_damaged_ones_are_named(tmp_path: Path) -> None:
    files = _weights(tmp_path)
    for name in ("zip.pth", "legacy.pth", "model.safetensors", "array.npy"):
        preflight.check_checkpoint(str(files[name]))
    for name in ("garbage.pth", "truncated.pth", "truncated.safetensors", "empty.pth"):
        with pytest.raises(ValueError, match=f"cannot read checkpoint {files[name]}: ") as raised:
            preflight.check_checkpoint(str(files[name]))
        assert "\n" not in str(raised.value)


@pytest.mark.parametrize("damage", ["truncated", "no read permission"])
def test_an_unreadable_checkpoint_creates_no_run(damage: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    import builtins

    weights = _weights(tmp_path)["truncated.pth" if damage == "truncated" else "zip.pth"]
    if damage == "no read permission":
        weights.chmod(0)
        if os.geteuid() == 0:  # root reads any file: refuse this one as the kernel would
            real_open = builtins.open

            def denied(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
                if isinstance(file, (str, os.PathLike)) and Path(file) == weights:
                    raise PermissionError(13, "Permission denied", str(file))
                return real_open(file, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", denied)
    err = _refused(["--backbone", "vit_tiny_patch16_224", "--checkpoint", str(weights)],
                   tmp_path / "s", capsys)
    assert f"cannot read checkpoint {weights}: " in err
