"""The fault probe's store findings (issue 36, "The store and the data", items 1, 2, 3, 5
and the smaller 8e, 8f): damage is reported, never rebuilt; stored ids never lead outside
the store; a worker never waits on a store nobody meant; export never overwrites unasked
and never writes into the store; downloads are verified; atomic writes reach the disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2vpt_core import jobs
from e2vpt_core.cli import main
from e2vpt_core.store import RunStore, StoreError
from e2vpt_core.store.runs import RUN_ID


@pytest.fixture(autouse=True)
def no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2VPT_STORE", raising=False)


def _error(err: str) -> str:
    """The one error line a refused command prints (no traceback)."""
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# --- item 1: a damaged database is reported, never rebuilt -----------------------------
def _emptied(tmp_path: Path) -> tuple[RunStore, str]:
    """A store with one run whose database was emptied (0 bytes, as the probe left it)."""
    store = RunStore(tmp_path / "store")
    run_id = store.create_run({})
    store.db_path.write_bytes(b"")
    for name in ("store.sqlite-wal", "store.sqlite-shm"):
        (store.root / name).unlink(missing_ok=True)
    return store, run_id


def test_a_zero_byte_database_is_reported_and_left_as_it_is(tmp_path: Path) -> None:
    store, run_id = _emptied(tmp_path)
    with pytest.raises(StoreError, match="is empty") as raised:
        RunStore(store.root)
    assert str(store.db_path) in str(raised.value) and "\n" not in str(raised.value)
    assert store.db_path.stat().st_size == 0
    assert store.run_dir(run_id).is_dir()


def test_listing_a_zero_byte_store_is_one_error_and_rebuilds_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store, _ = _emptied(tmp_path)
    capsys.readouterr()
    assert main(["runs", "--store", str(store.root)]) == 2
    assert str(store.db_path) in _error(capsys.readouterr().err)
    assert store.db_path.stat().st_size == 0


def test_a_database_of_another_program_is_not_turned_into_a_store(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").touch()
    sqlite3.connect(tmp_path / "store.sqlite").execute("CREATE TABLE other (x)").connection \
        .commit()
    with pytest.raises(StoreError, match="holds no run table"):
        RunStore(tmp_path)


def test_a_lost_database_beside_run_folders_is_reported(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    run_id = store.create_run({})
    store.db_path.unlink()
    with pytest.raises(StoreError, match=f"is missing but .* holds 1 run folder.*{run_id}"):
        RunStore(store.root)
    assert not store.db_path.exists()


def test_a_new_store_is_still_initialised(tmp_path: Path) -> None:
    (tmp_path / "made-for-it").mkdir()
    for root in (tmp_path / "made-for-it", tmp_path / "brand-new"):
        store = RunStore(root)
        assert store.runs().empty and store.db_path.stat().st_size > 0
        RunStore(root)  # and opened again


# --- item 2: stored run ids never lead outside the store -------------------------------
def _crafted_row(store: RunStore, run_id: str) -> None:
    with sqlite3.connect(store.db_path) as connection:
        connection.execute("INSERT INTO runs (id, kind, status, config, created_at) "
                           "VALUES (?, 'train', 'failed', '{}', 0)", (run_id,))


def _victim(tmp_path: Path) -> tuple[Path, RunStore, str]:
    """A folder outside the store holding a file, the store, and a run of it."""
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "precious.txt").write_text("mine")
    store = RunStore(tmp_path / "store")
    return victim, store, store.create_run({})


def test_a_crafted_run_id_deletes_nothing_outside_the_store(tmp_path: Path) -> None:
    victim, store, _ = _victim(tmp_path)
    _crafted_row(store, "../victim")
    with pytest.raises(StoreError, match=r"'\.\./victim' is not a run id") as raised:
        store.delete_run("../victim")
    assert "\n" not in str(raised.value)
    assert (victim / "keep" / "precious.txt").read_text() == "mine"
    assert store.get_run("../victim")["id"] == "../victim"  # nothing deleted, row included
    for touch in (lambda: store.run_dir("../victim"),
                  lambda: store.has_tensors("../victim", "init"),
                  lambda: store.delete_tensors("../victim", "checkpoint")):
        with pytest.raises(StoreError, match="is not a run id"):
            touch()


def test_a_crafted_run_id_is_one_line_in_the_cli(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    store = RunStore(tmp_path / "store")
    _crafted_row(store, "../victim")
    capsys.readouterr()
    assert main(["export", "../victim", str(tmp_path / "out"), "--store", str(store.root)]) == 2
    assert "is not a run id" in _error(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_run_folder_that_is_a_link_out_of_the_store_is_not_followed(tmp_path: Path) -> None:
    victim, store, run_id = _victim(tmp_path)
    store.run_dir(run_id).rmdir()
    store.run_dir(run_id).symlink_to(victim)
    with pytest.raises(StoreError, match="leads outside the run store"):
        store.delete_run(run_id)
    assert (victim / "keep" / "precious.txt").read_text() == "mine"
    assert store.get_run(run_id)["id"] == run_id


def test_links_inside_a_run_folder_are_removed_not_followed(tmp_path: Path) -> None:
    victim, store, run_id = _victim(tmp_path)
    (store.run_dir(run_id) / "embeddings").symlink_to(victim)
    store.delete_run(run_id)
    assert not store.run_dir(run_id).exists()
    assert (victim / "keep" / "precious.txt").read_text() == "mine"


def test_tensor_names_stay_inside_their_run_folder(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    run_id = store.create_run({})
    for name in ("../escape", "/abs", ".hidden", ""):
        with pytest.raises(ValueError, match="is not a tensor file name"):
            store.has_tensors(run_id, name)


def test_the_ids_the_store_makes_are_run_ids(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    assert RUN_ID.fullmatch(store.create_run({}))
    assert RUN_ID.fullmatch(store.enqueue_job("train", {}, new_run={})[1])


# --- item 3: a worker never creates a store it was not asked to ------------------------
def test_a_worker_pointed_at_a_missing_store_is_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "typo"
    assert jobs.main(["--store", str(missing), "--idle-exit", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err, err
    assert f"run store {missing} (named by --store) does not exist" in err
    monkeypatch.setenv("E2VPT_STORE", str(missing))
    assert jobs.main(["--idle-exit", "0"]) == 1
    assert "(named by $E2VPT_STORE) does not exist" in capsys.readouterr().err
    assert not missing.exists()
    assert jobs.main(["--create-store", "--idle-exit", "0", "--poll", "0.01"]) == 0
    assert (missing / "store.sqlite").is_file()


@pytest.mark.slow
def test_the_worker_command_on_a_typo_exits_instead_of_waiting(tmp_path: Path) -> None:
    """The probe's command line, which used to create /typo and wait forever."""
    missing = tmp_path / "typo"
    result = subprocess.run([sys.executable, "-m", "e2vpt_core.jobs", "--store", str(missing)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "--create-store" in result.stderr, result.stderr
    assert not missing.exists()


@pytest.mark.slow
def test_the_apps_worker_start_names_a_store_that_exists(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    assert jobs.ensure_worker(store, idle_exit=0.2)
    deadline = time.monotonic() + 120
    while jobs.worker_alive(store):
        assert time.monotonic() < deadline, "the worker did not exit when idle"
        time.sleep(0.1)
    log = (store.root / jobs.LOG_FILE).read_text()
    assert "error" not in log, log


# --- item 5 and 8e: export and the app's download --------------------------------------
@pytest.fixture
def exported(tmp_path: Path, tiny_backbone: str) -> tuple[RunStore, str]:
    """A store with one completed run and its adapter artifact (no training needed)."""
    from e2vpt_core import PromptConfig, create_model, save_adapter

    store = RunStore(tmp_path / "store")
    run_id = store.create_run({}, status="completed")
    model = create_model(tiny_backbone, 3, PromptConfig("vpt-deep", visual_prompt_len=2),
                         pretrained=False)
    save_adapter(model, store.run_dir(run_id) / "adapter")
    return store, run_id


def _export(store: RunStore, run_id: str, target: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["export", run_id, str(target), "--store", str(store.root), *extra])
    err = capsys.readouterr().err
    return code, _error(err) if code else ""


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file()}


def test_export_to_an_existing_folder_needs_force(exported, tmp_path: Path, capsys) -> None:
    from e2vpt_core.artifacts import check_adapter

    store, run_id = exported
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, error = _export(store, run_id, target, capsys)
    assert code == 2 and f"{target} exists (a folder)" in error and "--force" in error
    assert _files(target) == {"notes.txt": b"mine"}
    assert _export(store, run_id, target, capsys, "--force") == (0, "")
    check_adapter(target)
    assert (target / "notes.txt").read_text() == "mine"


def test_export_to_an_existing_file_needs_force_then_replaces_it(
        exported, tmp_path: Path, capsys) -> None:
    from e2vpt_core.artifacts import check_adapter

    store, run_id = exported
    target = tmp_path / "out"
    target.write_text("mine")
    code, error = _export(store, run_id, target, capsys)
    assert code == 2 and f"{target} exists (a file)" in error
    assert target.read_text() == "mine"
    assert _export(store, run_id, target, capsys, "--force") == (0, "")
    check_adapter(target)


@pytest.mark.parametrize("where", ["its own adapter folder", "the store's root", "a link"])
def test_export_never_writes_into_the_store(exported, tmp_path: Path, capsys, where) -> None:
    store, run_id = exported
    adapter = store.run_dir(run_id) / "adapter"
    before = _files(store.root)
    target = {"its own adapter folder": adapter, "the store's root": store.root / "out",
              "a link": tmp_path / "link"}[where]
    if where == "a link":
        target.symlink_to(adapter)
    for extra in ((), ("--force",)):
        code, error = _export(store, run_id, target, capsys, *extra)
        assert code == 2 and f"is inside the run store {store.root}" in error, error
    assert _files(store.root) == before and not (store.root / "out").exists()


def test_export_with_force_replaces_a_link_rather_than_writing_through_it(
        exported, tmp_path: Path, capsys) -> None:
    store, run_id = exported
    inside = store.run_dir(run_id) / "notes.json"
    inside.write_text("store's")
    target = tmp_path / "out"
    target.mkdir()
    (target / "adapter_config.json").symlink_to(inside)
    assert _export(store, run_id, target, capsys, "--force") == (0, "")
    assert inside.read_text() == "store's"
    assert not (target / "adapter_config.json").is_symlink()


def test_the_apps_zip_download_is_verified_like_export(exported) -> None:
    from app.state import adapter_zip
    from e2vpt_core.artifacts import ArtifactError

    store, run_id = exported
    assert adapter_zip(store, run_id)
    weights = store.run_dir(run_id) / "adapter" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ArtifactError, match=f"{weights} is damaged"):
        adapter_zip(store, run_id)


# --- item 8f: atomic writes reach the disk ---------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fds through /proc")
def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from e2vpt_core.fileio import atomic_write

    calls: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(
        ("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or fsync(fd))
    monkeypatch.setattr(os, "replace", lambda src, dst: calls.append(
        ("replace", str(dst))) or replace(src, dst))
    target = tmp_path / "file.bin"
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"data"))
    assert [kind for kind, _ in calls] == ["fsync", "replace", "fsync"], calls
    assert Path(calls[0][1]).name.startswith(".file.bin.")  # the temporary file
    assert calls[2][1] == str(tmp_path)  # its folder, after the rename
    assert target.read_bytes() == b"data"
