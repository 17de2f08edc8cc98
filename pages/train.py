"""Train: configure a run, queue it for the worker, follow it live, cancel it.

The page only submits jobs and reads the store; training runs in the worker process, so
a rerun, a closed tab or an app restart leaves the run going.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app.context import accuracy_text, labelled_references
from app.live import (
    FIGURE_SECONDS,
    aged_eta,
    keep_pace,
    live_read,
    pace,
    store_signature,
)
from app.names import config_name, run_names
from app.state import as_text, get_store, progress_bar, progress_of, start_worker
from e2vpt_core.catalog import BUILTIN_DESCRIPTIONS, BUILTIN_TASKS
from e2vpt_core.config import (
    AUGMENTATIONS,
    LORA_TARGETS,
    PromptConfig,
    describe_kind_augmentation,
)
from e2vpt_core.demo import DEMO_EPOCHS, DEMO_TASK, submit_demo
from e2vpt_core.jobs import cancel_job, submit_train, worker_alive
from e2vpt_core.methods import METHODS, REGISTRY, describe_default_base_lr, get_method
from e2vpt_core.report.figures import training_curves
from e2vpt_core.store import RunStore
from e2vpt_core.store.changes import newer_metrics
from e2vpt_core.store.groups import new_group_id
from e2vpt_core.train import TrainConfig
from e2vpt_core.train.config import DEFAULT_BACKBONE

BACKBONE_SOURCES = ("Bundled offline ViT", "timm name", "Checkpoint file", "Directory")
DATASET_SOURCES = ("Built-in task", "Dataset on disk")
# The run this tab's live view shows; `train_run` is the one it started (Pruning opens it).
FOLLOWED = "followed_run"
# What the last Start or quick demo queued, (run id, message): drawn above the live view
# while that run is followed and not finished, so the page rerun that switches the view to
# its fast timer does not wipe it.
NOTICE = "train:notice"
ACTIVE = ("queued", "running")  # a run in these is followed every FOLLOW_SECONDS
# The live view's timer while its run is queued or running: progress and ETA at this pace
# (the curves at most every FIGURE_SECONDS); each redraw costs the browser 50-85 ms.
FOLLOW_SECONDS = 3


def backbone_input() -> tuple[str, str | None]:
    """The backbone name and, for "Checkpoint file", the local weights file."""
    source = st.radio("Backbone", BACKBONE_SOURCES, horizontal=True)
    if source == BACKBONE_SOURCES[0]:
        name = st.selectbox("Bundled backbone", list(BUILTIN_DESCRIPTIONS),
                            index=list(BUILTIN_DESCRIPTIONS).index(DEFAULT_BACKBONE))
        st.caption(f"`{name}`: {BUILTIN_DESCRIPTIONS[name]}.")
        return name, None
    if source == BACKBONE_SOURCES[1]:
        return st.text_input("timm model name", "vit_base_patch16_224.augreg_in21k").strip(), None
    if source == BACKBONE_SOURCES[2]:
        left, right = st.columns(2)
        name = left.text_input("timm architecture", "vit_base_patch16_224").strip()
        path = right.text_input("Weights file (.safetensors, .pth, .npz; MoCo v3 too)").strip()
        return name, path or None
    return st.text_input("Backbone directory (config.json + model.safetensors)").strip(), None


def dataset_input() -> tuple[str, str]:
    """The dataset spec and the training augmentation (a built-in task keeps its recipe's)."""
    source = st.radio("Dataset", DATASET_SOURCES, horizontal=True)
    if source == DATASET_SOURCES[0]:
        task = st.selectbox("Task", sorted(BUILTIN_TASKS), format_func=lambda t:
                            f"{t}: {BUILTIN_TASKS[t]}")
        return f"builtin:{task}", "auto"
    spec = st.text_input("Dataset spec", placeholder="vtab:/data/vtab-1k/cifar",
                         help="vtab:/path/vtab-1k/TASK, fgvc:/path/ROOT or folder:/path").strip()
    augment = st.selectbox("Training augmentation", AUGMENTATIONS,
                           help="auto: the recipe of the spec's kind "
                                f"({describe_kind_augmentation()}); a folder tree's mirror "
                                "image may be another class. Choose crop-flip for "
                                "mirror-invariant classes.")
    return spec, augment


def method_inputs() -> dict:
    method = st.selectbox("Method", METHODS, index=METHODS.index("e2vpt"),
                          help="\n".join(f"- **{m.name}**: {m.summary}"
                                         for m in REGISTRY.values()))
    spec = REGISTRY[method]
    left, right = st.columns(2)
    prompt_len = left.number_input("Visual prompt length P", 0, 500,
                                   10 if spec.visual_prompts else 0, key=f"P-{method}",
                                   disabled=not spec.visual_prompts)
    kv_len = right.number_input("Key-value prompt length T", 0, 500,
                                5 if spec.kv_prompts else 0, key=f"T-{method}",
                                disabled=not spec.kv_prompts)
    epochs = left.number_input("Epochs", 1, 1000, 10,
                               help="The paper trains 100 epochs; 10 suits the built-in "
                                    "tasks on a CPU (≈ 40 s per epoch on 2 cores).")
    batch_size = right.number_input("Batch size", 1, 4096, 64)
    base_lr = left.number_input("Base learning rate (× batch / 256)", 0.0001, 1000.0,
                                spec.base_lr, key=f"lr-{method}",
                                help="The paper searches 0.05–50. The default is the "
                                     f"method's: {describe_default_base_lr()}.")
    weight_decay = right.number_input("Weight decay", 0.0, 1.0, 0.0001, format="%.4f")
    seed = left.number_input("Seed", 0, 2**31 - 1, 0)
    repeats = right.number_input("Repeat over N seeds", 1, 100, 1,
                                 help="One run per seed (Seed, Seed + 1, …), equal but for "
                                      "the seed: a group the Runs page shows as mean ± sd")
    per_block = right.checkbox("Masks per block", disabled=not spec.prunable,
                               help="One pruning mask per prompt layer, so pruning may keep "
                                    "different tokens in different blocks (the reference "
                                    "code shares one mask across layers)")
    official = left.checkbox("Official preset", disabled=not spec.prunable,
                             help="The official code's pipeline: 16 interleaved "
                                  "segments, masks trained with the prompts, its head init, "
                                  "fp32, the lr stepped once per epoch (epoch 0 at lr 0), "
                                  "signed scores, pruned counts rounded down, fresh-init "
                                  "rewinds")
    checkpointing = right.checkbox("Gradient checkpointing",
                                   help="Recompute each block's activations in backward: "
                                        "much less memory on a GPU, about one more forward "
                                        "per step, the same results")
    return dict(method=method, prompt_len=int(prompt_len), kv_len=int(kv_len),
                masks_per_block=per_block and spec.prunable,
                preset="official" if official and spec.prunable else None,
                epochs=int(epochs), batch_size=int(batch_size), base_lr=float(base_lr),
                weight_decay=float(weight_decay), seed=int(seed), repeats=int(repeats),
                grad_checkpointing=checkpointing, **peft_inputs(method))


def peft_inputs(method: str) -> dict:
    """LoRA's rank, alpha and target layers, or the adapters' bottleneck width."""
    default, options = PromptConfig(method), REGISTRY[method].options
    if "lora_rank" in options:
        left, right = st.columns(2)
        return dict(
            lora_rank=int(left.number_input("LoRA rank r", 1, 1024, default.lora_rank)),
            lora_alpha=float(right.number_input("LoRA alpha (updates × alpha / r)", 0.01,
                                                1e4, default.lora_alpha)),
            lora_targets=",".join(st.multiselect("LoRA on", LORA_TARGETS,
                                                 default.lora_target_names)))
    if "adapter_bottleneck" not in options:
        return {}
    left, right = st.columns(2)
    values = dict(adapter_bottleneck=int(left.number_input(
        "Adapter bottleneck", 1, 4096, default.adapter_bottleneck)))
    if "adapter_drop_path" in options:
        values["adapter_drop_path"] = float(right.number_input(
            "Adapter drop-path rate", 0.0, 0.95, default.adapter_drop_path, 0.05))
    return values


def build_config(backbone: str, dataset: str, values: dict,
                 checkpoint: str | None = None) -> TrainConfig:
    """Every check the CLI makes before creating a run; raises ValueError with the reason."""
    if not backbone:
        raise ValueError("name a backbone")
    prompt = PromptConfig.for_method(values["method"], values["prompt_len"], values["kv_len"],
                                     masks_per_block=values.get("masks_per_block", False),
                                     **{k: values[k] for k in get_method(values["method"]).options
                                        if k in values})
    config = TrainConfig(backbone=backbone, checkpoint=checkpoint, dataset=dataset,
                         augment=values.get("augment", "auto"), prompt=prompt,
                         epochs=values["epochs"], batch_size=values["batch_size"],
                         base_lr=values["base_lr"], weight_decay=values["weight_decay"],
                         seed=values["seed"], preset=values.get("preset"),
                         grad_checkpointing=values.get("grad_checkpointing", False))
    from e2vpt_core.train.preflight import check_sources  # torch: only on submit

    check_sources(config)
    return config

def quick_demo(store: RunStore, first_run: bool) -> None:
    """One click that gives every page data: two runs, importance, a rewind, embeddings."""
    box = st.container(border=True) if first_run else st.expander("Quick demo")
    if first_run:
        box.markdown("**First time here?** The quick demo trains VPT-deep and E²VPT on a "
                     "built-in task with the bundled backbone, scores the prompts, rewinds "
                     "a pruned E²VPT and embeds both runs on the Poincaré disk: every page "
                     "has data within a few minutes on a CPU.")
    left, right = box.columns(2)
    tasks = sorted(BUILTIN_TASKS)
    task = left.selectbox("Demo task", tasks, index=tasks.index(DEMO_TASK))
    epochs = right.number_input("Demo epochs", 1, 100, DEMO_EPOCHS)
    if box.button("Run the quick demo", type="primary" if first_run else "secondary"):
        try:
            demo = submit_demo(store, task, int(epochs))
        except ValueError as error:
            box.error(str(error))
            return
        st.session_state["train_run"] = st.session_state[FOLLOWED] = demo.e2vpt_run
        start_worker(store)
        st.session_state[NOTICE] = (
            demo.e2vpt_run, "Queued the demo: an E²VPT and a VPT-deep run, then importance, "
            "a rewind and the embedding view (five jobs: see the sidebar's queue; the E²VPT "
            "run is followed here, then see Pruning and Embeddings).")


def start(store: RunStore, config: TrainConfig, repeats: int = 1) -> None:
    """Queue the run; with `repeats` > 1, one train job per seed (Seed, Seed + 1, …) as one
    seed group. The first run is followed."""
    group = new_group_id(store, config.to_dict()) if repeats > 1 else None
    queued = [submit_train(store, config.replace(seed=seed, group_id=group))
              for seed in range(config.seed, config.seed + repeats)]
    job_id, run_id = queued[0]
    st.session_state["train_run"] = st.session_state[FOLLOWED] = run_id
    start_worker(store)
    name = as_text(config_name(config.to_dict()))
    st.session_state[NOTICE] = (run_id, (
        f"Queued run {name} ({run_id}, job {job_id})." if group is None else
        f"Queued {repeats} runs of {name} as group `{group}`, seeds {config.seed}–"
        f"{config.seed + repeats - 1} (jobs {job_id}–{queued[-1][0]}); the first is "
        "followed here."))


def followed_run(runs: pd.DataFrame, chosen: str | None) -> str:
    """The run this tab follows: the one it started or already showed, else the one
    training now (not the newest queued one, which has not started), else the newest."""
    ids = list(runs["id"])
    if chosen in ids:
        return chosen
    running = runs[runs["status"] == "running"]
    return str(running["id"].iloc[0]) if not running.empty else ids[0]


def read_live(store: RunStore, run_id: str, previous: dict | None) -> dict:
    """What the live view shows, read from the store (only after it changed, and then
    only the metrics logged since `previous`)."""
    tail = newer_metrics(store, previous and previous["tail"], run_id)
    run, runs, now = store.get_run(run_id), store.runs(), time.time()
    jobs = store.current_jobs(0)
    active = jobs[(jobs["run_id"] == run_id) & jobs["status"].isin(["queued", "running"])]
    return {"tail": tail, "state": progress_of(run, tail.frame, now), "read_at": now,
            "status": run["status"], "reason": run["reason"], "name": run_names(runs)[run_id],
            "references": labelled_references(runs, run_id, "val"),
            "accuracy": accuracy_text(runs, run_id), "worker": worker_alive(store),
            "job": int(active["id"].iloc[0]) if not active.empty else None}


def live_view(store: RunStore, run_id: str, active: bool) -> None:
    """Re-run on its own (every FOLLOW_SECONDS while the run is `active`, queued or
    running): status, progress, ETA, curves and the Cancel button; drawn from the last read
    while the store is unchanged (`app.live`), the curves redrawn at most every
    `FIGURE_SECONDS` while the run trains.

    The status is drawn here, never in the run selector above, so it cannot go stale."""
    view = live_read(("train", str(store.root), run_id), store_signature(store),
                     lambda previous: read_live(store, run_id, previous))
    keep_pace(active, view["status"] in ACTIVE)
    state = aged_eta(view["state"], view["read_at"])
    st.progress(*progress_bar(state))
    if view["reason"]:
        show = st.error if view["status"] == "failed" else st.info  # a cancel is no error
        show(f"{view['status']}: {as_text(view['reason'])}")
    st.caption(view["accuracy"])
    if view["job"] is not None and st.button("Cancel", key="cancel"):
        st.info(f"Job {view['job']}: {cancel_job(store, view['job'])}")
    if state["status"] in ACTIVE and not view["worker"]:
        st.warning("No worker is running: start one with "
                   f"`python -m e2vpt_core.jobs --store {store.root}`.")
    if view["tail"].frame.empty:  # no empty chart: it would push the demo's message down
        st.caption("Curves appear here once the run logs its first step.")
        return
    drawn = (view["tail"].last_row, view["status"], view["name"], str(view["references"]))
    st.plotly_chart(live_read(("curves", str(store.root), run_id), drawn,
                              lambda _: training_curves({view["name"]: view["tail"].frame},
                                                        references=view["references"]),
                              every=FIGURE_SECONDS if view["status"] == "running" else 0.0),
                    key="curves")


def follow(store: RunStore) -> None:
    """The followed run's live view, or how to start one."""
    runs = store.runs()
    if runs.empty:
        st.info("No runs yet: run the quick demo, or configure a run below and press Start.")
        return
    ids, names = list(runs["id"]), run_names(runs)
    chosen = followed_run(runs, st.session_state.get(FOLLOWED))
    run_id = st.selectbox("Follow run", ids, index=ids.index(chosen), format_func=names.get)
    st.session_state[FOLLOWED] = run_id  # still followed once it completes
    active = runs.set_index("id").loc[run_id, "status"] in ACTIVE
    notice = st.session_state.get(NOTICE)
    if active and notice is not None and notice[0] == run_id:
        st.success(notice[1])
    st.fragment(run_every=pace(active, FOLLOW_SECONDS))(live_view)(store, run_id, active)


store = get_store()
st.title("Train")
# A worker ready before the first click: it loads torch while the page is read, resumes
# what an app or machine restart left, and exits after 10 idle minutes.
start_worker(store)
followed = st.container()  # filled last, so a run started below is followed up here
quick_demo(store, first_run=store.runs().empty)
with st.container(border=True):
    backbone, checkpoint = backbone_input()
    dataset, augment = dataset_input()
    values = {**method_inputs(), "augment": augment}
    if st.button("Start", type="primary"):
        try:
            start(store, build_config(backbone, dataset, values, checkpoint),
                  values["repeats"])
        except ValueError as error:
            st.error(str(error))
with followed:
    follow(store)
