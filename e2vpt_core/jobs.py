"""The job queue: the app (or anyone) submits work; one worker process runs it.

Training must outlive a Streamlit rerun, a closed tab or an app restart, so it never runs
in the app's process. Jobs live in the run store's `jobs` table; a single worker per store
(`python -m e2vpt_core.jobs --store DIR`) claims them one at a time, short analysis jobs
ahead of long training ones without starving either, and never a job before the run it needs
is trained (`store.jobs_table`); it runs them through the same engine functions as the CLI.
Submitting a job equal to one queued or running returns that job (a train job is always new:
each trains its own run).

One worker per store is guaranteed by an exclusive `flock` on `<store>/worker.lock`, held
for the worker's whole life and released by the kernel when it dies (even by SIGKILL).
`ensure_worker` takes the lock itself and hands the locked file to the child it starts, so
there is no moment where two starters could both see "no worker". A worker that was killed
leaves its job `running`; the next worker claims such jobs first and resumes their runs
from the last checkpoint. Workers are recorded by pid and process start time, so a new
worker with a dead one's pid still sees that one's jobs as orphans. Training a run takes
its lease (`store.leases`): a job whose run another process trains is not started.
"""

from __future__ import annotations

import argparse
import fcntl
import inspect
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .store import RunOwned, RunStore, resolve_store
from .store.jobs_table import Estimate, estimate_rewinds  # noqa: F401 (engine API)
from .train.config import TrainConfig

if TYPE_CHECKING:
    from .train.loop import RunResult

JOB_KINDS = ("train", "rewind", "importance", "embed")
LOCK_FILE = "worker.lock"
SPAWN_LOCK_FILE = "worker.spawn.lock"
LOG_FILE = "worker.log"
DEFAULT_IDLE_EXIT = 600.0
_JOB_STATUS = {"completed": "done", "failed": "failed", "cancelled": "cancelled"}


# ------------------------------------------------------------------------- submitting
def submit_train(store: RunStore, config: TrainConfig) -> tuple[int, str]:
    """Queue a training run: its `queued` run and its job are created together."""
    job_id, run_id = store.enqueue_job("train", {}, new_run=config.to_dict())
    assert run_id is not None
    return job_id, run_id


def submit_rewind(store: RunStore, parent_run_id: str, token_ratio: float,
                  segment_ratio: float = 0.0, **options: Any) -> int:
    """Queue a rewind of a completed run, or of one whose training job is still queued or
    running (it runs first); the child run is created when the rewind job starts. An equal
    rewind already queued or running is returned instead of a new job."""
    from .prune.importance import check_token_scores
    from .prune.rewind import check_rewind_options, prunable_config
    from .prune.selection import check_ratio

    check_rewind_options(options.get("init", "fresh"), options.get("mode", "zero"),
                         options.get("epochs"))
    check_token_scores(options.get("token_scores", "mask"))
    check_ratio("token_ratio", token_ratio)
    check_ratio("segment_ratio", segment_ratio)
    key = _rewind_key(options)
    prunable_config(store, parent_run_id, pending_ok=True)
    payload = {"parent": parent_run_id, "token_ratio": token_ratio,
               "segment_ratio": segment_ratio, **options}
    return store.enqueue_job("rewind", payload, merge=True, key=key)[0]


def _rewind_key(options: dict[str, Any] | None = None
                ) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A rewind's payload with `create_rewind_run`'s defaults filled in: what makes two
    rewinds the same (`init='fresh'` given or left out). Refuses unknown `options`."""
    from .prune.rewind import create_rewind_run

    defaults = {name: parameter.default for name, parameter
                in inspect.signature(create_rewind_run).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    unknown = sorted(set(options or {}) - set(defaults))
    if unknown:
        raise ValueError(f"unknown rewind option(s) {unknown}; known: {sorted(defaults)}")
    return lambda payload: {**defaults, **payload}


def queued_rewinds(store: RunStore, parent_run_id: str, ratios: list[tuple[float, float]],
                   **options: Any) -> dict[tuple[float, float], int]:
    """Of these (token, segment) ratios, those whose rewind of the parent with these options
    is already queued or running, with its job id: what a sweep leaves out."""
    key, found = _rewind_key(options), {}
    for token, segment in ratios:
        payload = {"parent": parent_run_id, "token_ratio": token, "segment_ratio": segment,
                   **options}
        job_id = store.find_job("rewind", payload, key)
        if job_id is not None:
            found[(token, segment)] = job_id
    return found


def submit_importance(store: RunStore, run_id: str, max_batches: int | None = None) -> int:
    """Queue the full-pass importance of a run (completed, or with its training queued):
    its prompts scored over the training split and stored as the run's `importance`."""
    from .prune.rewind import prunable_config

    prunable_config(store, run_id, pending_ok=True)
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches={max_batches!r} must be an integer >= 1 or None")
    return store.enqueue_job("importance", {"run": run_id, "max_batches": max_batches},
                             merge=True)[0]


def submit_embed(store: RunStore, run_ids: list[str], split: str = "test",
                 **options: Any) -> int:
    """Queue the Poincaré view of one run, or the comparison of two (cached by the view)."""
    if len(run_ids) not in (1, 2):
        raise ValueError(f"an embed job takes one or two runs, not {len(run_ids)}")
    for run_id in run_ids:
        store.get_run(run_id)
    return store.enqueue_job("embed", {"runs": list(run_ids), "split": split,
                                       "options": options}, merge=True)[0]


def cancel_job(store: RunStore, job_id: int) -> str:
    """Queued: cancelled at once, never runs. Running: flagged; the worker's `should_stop`
    sees the flag at the next step and the run ends `cancelled`. Returns the new status."""
    return store.cancel_job(job_id)


def cancel_jobs(store: RunStore, kind: str | None = None, run: str | None = None,
                ids: list[int] | None = None) -> dict[int, str]:
    """Cancel all queued and running jobs, or a group: one `kind`, the jobs of one `run`
    (its training, or jobs reading it: with `kind="rewind"` a sweep's rewinds of a parent),
    or `ids`; as `cancel_job` each, in one transaction. The new status by job id."""
    return store.cancel_jobs(kind, run, ids)


# ---------------------------------------------------------------------------- running
def _should_stop(store: RunStore, job_id: int) -> Callable[[], bool]:
    return lambda: store.get_job(job_id)["status"] == "cancelling"


def _progress(store: RunStore, run_id: str) -> Callable[[dict[str, Any]], None]:
    """Record the run's total step count once, so the app can show progress and an ETA."""
    recorded: set[int] = set()

    def report(event: dict[str, Any]) -> None:
        if event["total_steps"] not in recorded:
            recorded.add(event["total_steps"])
            store.update_summary(run_id, total_steps=event["total_steps"])

    return report


def _train_stored_run(store: RunStore, job: dict[str, Any], run_id: str) -> RunResult:
    from .train.loop import RunResult, train_run  # torch: only the worker needs it

    run = store.get_run(run_id)
    if run["status"] in _JOB_STATUS:  # finished before its worker could record the job
        return RunResult(run_id, run["status"], run["reason"])
    config = TrainConfig.from_dict(run["config"])
    return train_run(config, store, run_id, resume=job["resumed"],
                     progress=_progress(store, run_id),
                     should_stop=_should_stop(store, job["id"]))


def _rewind(store: RunStore, job: dict[str, Any]) -> RunResult:
    """Create the child run (masks from the parent's importance), then train it."""
    from .prune.rewind import create_rewind_run

    run_id = job["run_id"]
    if run_id is None:
        options = dict(job["payload"])
        run_id, _, _ = create_rewind_run(store, options.pop("parent"), **options)
        store.set_job_run(job["id"], run_id)
    return _train_stored_run(store, job, run_id)


def _importance(store: RunStore, job: dict[str, Any]) -> None:
    from .prune.importance import compute_run_importance
    from .prune.rewind import prunable_config

    run_id = job["payload"]["run"]
    prunable_config(store, run_id)
    compute_run_importance(store, run_id, job["payload"].get("max_batches"))


def _embed(store: RunStore, job: dict[str, Any]) -> None:
    from .hyperbolic.view import compare_runs, embedding_view

    payload = job["payload"]
    runs, split, options = payload["runs"], payload["split"], payload.get("options", {})
    if len(runs) == 2:
        compare_runs(store, runs[0], runs[1], split, **options)
    else:
        embedding_view(store, runs[0], split, **options)


def run_job(store: RunStore, job: dict[str, Any]) -> str:
    """Run one claimed job and record how it ended; never raises for a failing job."""
    job_id = job["id"]
    try:
        if job["kind"] == "train":
            result = _train_stored_run(store, job, job["run_id"])
        elif job["kind"] == "rewind":
            result = _rewind(store, job)
        elif job["kind"] == "importance":
            _importance(store, job)
            result = None
        elif job["kind"] == "embed":
            _embed(store, job)
            result = None
        else:
            raise ValueError(f"unknown job kind {job['kind']!r}; one of {JOB_KINDS}")
    except RunOwned as owned:  # another process trains the run: leave the run to it
        store.finish_job(job_id, "failed", f"not started: {owned}")
        return "failed"
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        run_id = store.get_job(job_id)["run_id"]
        if run_id is not None:
            store.log_event(run_id, traceback.format_exc(), level="error")
            if store.get_run(run_id)["status"] in ("queued", "running"):
                try:
                    store.set_status(run_id, "failed", reason)
                except RunOwned:
                    pass  # its owner records how it ends
        store.finish_job(job_id, "failed", reason)
        return "failed"
    status = "done" if result is None else _JOB_STATUS[result.status]
    store.finish_job(job_id, status, None if result is None else result.reason)
    return status


# ----------------------------------------------------------------------------- locks
def _try_lock(path: os.PathLike | str) -> int | None:
    """An fd holding an exclusive lock on `path`, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_fd(store: RunStore, name: str) -> int | None:
    """A lock file of the store, opened for writing unless the store is read-only (`flock`
    needs no write access); None when a read-only store has none (no worker ever ran)."""
    if not store.read_only:
        return os.open(store.root / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        return os.open(store.root / name, os.O_RDONLY)
    except FileNotFoundError:
        return None


@contextmanager
def _spawn_lock(store: RunStore) -> Iterator[None]:
    """Serialises starting a worker with a worker deciding to exit when idle."""
    fd = _lock_fd(store, SPAWN_LOCK_FILE)
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def worker_alive(store: RunStore) -> bool:
    """Probing takes the lock for a moment, so it happens under the spawn lock: a probe
    must never make a concurrent `ensure_worker` believe a worker is alive."""
    with _spawn_lock(store):
        fd = _lock_fd(store, LOCK_FILE)
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def worker_pid(store: RunStore) -> int | None:
    """The live worker's pid (written into its lock file), or None."""
    if not worker_alive(store):
        return None
    text = (store.root / LOCK_FILE).read_text().strip()
    return int(text) if text.isdigit() else None


def ensure_worker(store: RunStore, idle_exit: float = DEFAULT_IDLE_EXIT) -> bool:
    """Start a detached worker unless one is alive; True when one was started.

    The worker lock is taken here and passed to the child (`pass_fds`), so the store is
    never without its lock holder between the check and the child's start. A read-only
    store gets none: a worker could not record anything there."""
    if store.read_only:
        return False
    with _spawn_lock(store):
        fd = _try_lock(store.root / LOCK_FILE)
        if fd is None:
            return False
        try:
            with open(store.root / LOG_FILE, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "e2vpt_core.jobs", "--store", str(store.root),
                     "--lock-fd", str(fd), "--idle-exit", str(idle_exit)],
                    pass_fds=(fd,), start_new_session=True, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT)
            _write_pid(fd, process.pid)
        finally:
            os.close(fd)
    return True


def _write_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(pid).encode(), 0)


def run_worker(store: RunStore, lock_fd: int | None = None, idle_exit: float | None = None,
               poll: float = 0.5, log: Callable[[str], None] = print,
               prepare: Callable[[], None] | None = None) -> int:
    """Claim and run jobs until idle for `idle_exit` seconds (None: forever); the count.
    `prepare` runs once the store's lock is held, before the first claim.

    Raises RuntimeError when another worker holds the store's lock, or it is read-only."""
    if store.read_only:
        raise RuntimeError(f"the run store {store.root} is read-only: no worker can run there")
    if lock_fd is None:
        with _spawn_lock(store):
            lock_fd = _try_lock(store.root / LOCK_FILE)
    fd = lock_fd
    if fd is None:
        raise RuntimeError(f"another worker is running on store {store.root}")
    _write_pid(fd, os.getpid())
    if prepare is not None:
        prepare()
    done, idle_since = 0, time.monotonic()
    try:
        while True:
            job = store.claim_job()
            if job is None and idle_exit is not None \
                    and time.monotonic() - idle_since >= idle_exit:
                with _spawn_lock(store):
                    job = store.claim_job()
                    if job is None:
                        os.close(fd)
                        fd = None
                        return done
            if job is None:
                time.sleep(poll)
                continue
            what = "resuming" if job["resumed"] else "starting"
            log(f"job {job['id']} ({job['kind']}, run {job['run_id']}): {what}")
            status = run_job(store, job)
            log(f"job {job['id']}: {status}")
            done += 1
            idle_since = time.monotonic()
    finally:
        if fd is not None:
            os.close(fd)


def import_job_modules() -> None:
    """Import what the jobs run (torch, timm, umap: seconds on a small CPU) before the
    first claim, so a worker started ahead of its jobs (the app starts one when its Train
    page opens) has them loaded when the first job arrives."""
    from .hyperbolic import view  # noqa: F401
    from .prune import importance, rewind  # noqa: F401
    from .train import loop  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2vpt_core.jobs",
                                     description="Run the store's queued jobs, one at a time.")
    parser.add_argument("--store", default=None,
                        help="run store directory (default: $E2VPT_STORE, else ./runs)")
    parser.add_argument("--create-store", action="store_true",
                        help="create the store named by --store or $E2VPT_STORE if it does "
                             "not exist (without it, a missing named store is a typo: an error)")
    parser.add_argument("--idle-exit", type=float, default=None,
                        help="exit after this many idle seconds (default: never)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between queue checks")
    parser.add_argument("--lock-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:  # a worker waiting on a store nobody submits to would wait forever
        store = RunStore(resolve_store(args.store, makes_runs=True, create=args.create_store))
        run_worker(store, args.lock_fd, args.idle_exit, args.poll,
                   log=lambda line: print(time.strftime("%H:%M:%S"), line, flush=True),
                   prepare=import_job_modules)
    except (ValueError, RuntimeError) as error:  # StoreError is a RuntimeError
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
