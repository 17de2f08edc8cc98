"""Checks a training config must pass before a run is created for it.

A run that can only fail (no GPU, an unreachable hub, a corrupt image, a batch larger than
the data, prompts that cannot fit in memory) must be refused with a one-line reason, not
left behind as a `failed` run. The model is built on PyTorch's meta device: every shape
check of the model runs and its activations are counted, without allocating any memory.
"""

from __future__ import annotations

import os
import socket
import threading
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..config import PromptConfig
from .config import TrainConfig
from .device import bf16_autocast, resolve_device

# Seconds to wait for the weights' host before calling it unreachable.
HUB_TIMEOUT_S = 3.0
_GIB = 1024**3


def check_device(name: str) -> torch.device:
    """The device `name` resolves to, refused if this machine does not have it."""
    try:
        device = resolve_device(name)
    except RuntimeError as error:
        raise ValueError(f"device {name!r} is not a device ({error}); use auto, cpu or "
                         "cuda[:N]") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: no CUDA GPU is available on this machine; "
                             "use --device cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r}: this machine has {count} GPU(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda[:N] or mps")
    return device


def _reachable(host: str, port: int = 443) -> bool:
    """Whether a TCP connection to host:port opens within HUB_TIMEOUT_S (DNS included)."""
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_TIMEOUT_S).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(HUB_TIMEOUT_S)
    return bool(result and result[0])


def _weights_source(name: str) -> tuple[str, bool] | None:
    """(host, cached locally) of a timm name's pretrained weights; None when not a hub name."""
    import timm

    from ..models.factory import BUILTIN_BACKBONES

    if name in BUILTIN_BACKBONES or Path(name).is_dir():
        return None
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        import huggingface_hub
        from huggingface_hub import constants

        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        files += ["model.safetensors", "pytorch_model.bin"]
        cached = any(isinstance(huggingface_hub.try_to_load_from_cache(cfg.hf_hub_id, f), str)
                     for f in files)
        host = "" if constants.HF_HUB_OFFLINE else urlparse(constants.ENDPOINT).hostname
        return host or "", cached
    if cfg.url:
        cached = (Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name).is_file()
        return urlparse(cfg.url).hostname or "", cached
    return None


def check_hub(config: TrainConfig) -> None:
    """Refuse at once a timm name whose weights are neither cached nor downloadable, instead
    of minutes of download retries."""
    if not config.pretrained or config.checkpoint is not None:
        return
    source = _weights_source(config.backbone)
    if source is None or source[1]:
        return
    host = source[0]
    if not host or not _reachable(host):
        where = host or "the Hugging Face hub (HF_HUB_OFFLINE is set)"
        raise ValueError(
            f"backbone {config.backbone!r} needs its pretrained weights from {where}, which "
            "cannot be reached, and they are not cached: download them elsewhere and pass "
            "--checkpoint FILE, or use --random-init or the bundled builtin-vit-tiny-layout")


def memory_total(device: torch.device) -> int:
    """Bytes of memory on `device` (a GPU's own memory, else the machine's RAM)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class _AttentionCount(TorchFunctionMode):
    """Counts what attention keeps beyond the layers' outputs: its result, and keys and
    values built for it (key-value prompts joined to K and V), not views of a layer's."""

    def __init__(self) -> None:
        super().__init__()
        self.values = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            self.values += result.numel() + sum(
                t.numel() for t in args[1:3] if isinstance(t, torch.Tensor) and not t._is_view())
        return result


def estimate_memory(model: torch.nn.Module, input_size: tuple[int, ...], batch: int,
                    bytes_per_value: int) -> tuple[int, int]:
    """(bytes, activation values per image) of one training step on a meta-device model.

    Activations kept for the backward pass are counted as the outputs of every leaf module
    (linear layers, norms, activations) and of attention, which is a lower bound;
    parameters count once, trainable ones three times (value, gradient, momentum).
    """
    values = 0

    def count(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal values
        if isinstance(output, torch.Tensor):
            values += output.numel()

    leaves = [m for m in model.modules() if not any(m.children())
              and not isinstance(m, (torch.nn.Identity, torch.nn.Dropout))]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad(), _AttentionCount() as attention:
            model(torch.empty(1, *input_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    values += attention.values
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return values * batch * bytes_per_value + 4 * (params + 2 * trainable), values


def check_model(config: TrainConfig, num_classes: int, device: torch.device) -> None:
    """Build the prompted model on the meta device (every shape check of the model runs)
    and refuse a config whose training step cannot fit in `device`'s memory."""
    from timm.data import resolve_model_data_config

    from ..models import build_backbone, create_model

    with torch.device("meta"):
        backbone = build_backbone(config.backbone, pretrained=False)
        # Fresh masks keep every token, so "remove" has the shapes of "zero"; its forward
        # selects rows by value, which the meta device cannot do.
        model = create_model(backbone, num_classes, config.prompt.replace(prune_mode="zero"))
    input_size = tuple(resolve_model_data_config(backbone)["input_size"])
    per_process = max(1, config.batch_size // int(os.environ.get("WORLD_SIZE", "1")))
    amp = config.amp and bf16_autocast(device)
    try:
        need, per_image = estimate_memory(model, input_size, per_process, 2 if amp else 4)
    except (NotImplementedError, RuntimeError) as error:
        if "meta" not in str(error):
            raise
        return  # an architecture the meta device cannot run: no estimate, no refusal
    if config.prompt.spec.head_only:  # no backward through the backbone: no activation kept
        need -= per_image * per_process * (2 if amp else 4)
    have = memory_total(device)
    if need > have:
        prompt = config.prompt
        raise ValueError(
            f"P={prompt.visual_prompt_len}, T={prompt.kv_prompt_len} with a batch of "
            f"{per_process} on {config.backbone} needs about {need / _GIB:,.1f} GiB "
            f"({per_image:,} activation values per image), more than the "
            f"{have / _GIB:,.1f} GiB of {device.type} memory here; lower -P/-T or "
            "--batch-size")


def check_prompts(prompt: PromptConfig) -> None:
    """A prompt method without prompts trains the head alone: a linear probe under a name
    that says otherwise, so it is refused."""
    spec = prompt.spec
    if spec.visual_prompts and not (prompt.has_visual_prompts or prompt.has_kv_prompts):
        lengths = "P = 0 and T = 0" if spec.kv_prompts else "P = 0"
        raise ValueError(f"{prompt.method} with {lengths} has no prompts: it would train the "
                         "head alone. Give it prompts, or choose the method linear.")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or a job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_workers(config: TrainConfig) -> None:
    """More data-loading processes than CPUs only compete with each other and the training
    process for them (and each holds a copy of the dataset's state): refused."""
    cpus = usable_cpus()
    if config.num_workers is not None and config.num_workers > cpus:
        raise ValueError(f"--workers {config.num_workers}: more data-loading processes than "
                         f"the {cpus} CPU(s) this process may use; give at most {cpus}, or "
                         "leave it out for the default")


# How the weight files `--checkpoint` takes begin: safetensors (a little-endian header
# length, then its JSON), a zip (torch.save, .npz), a pickle (older torch.save), .npy.
_ZIP, _PICKLE, _NPY = (b"PK\x03\x04", b"PK\x05\x06"), b"\x80", b"\x93NUMPY"


def check_checkpoint(path: str) -> None:
    """The `--checkpoint` file can be read and looks like weights (its header, or a zip's
    directory, parses), so a file the run could not load creates no failed run."""
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"checkpoint file not found: {path}")
    try:
        with open(file, "rb") as handle:
            head = handle.read(9)
        if head.startswith(_ZIP):
            zipfile.ZipFile(file).close()  # reads the directory at the end: truncation shows
        elif len(head) == 9 and head[8:] == b"{":
            with safe_open(str(file), framework="pt"):
                pass
        elif not head.startswith((_PICKLE, _NPY)):
            raise ValueError("not a weights file (safetensors, PyTorch or NumPy)")
    except OSError as error:
        raise ValueError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    except (ValueError, zipfile.BadZipFile, SafetensorError) as error:
        raise ValueError(f"cannot read checkpoint {path}: {error}") from None


def check_sources(config: TrainConfig) -> None:
    """Reject a config whose run could only fail (backbone, weights, device, data, memory),
    before a run is created for it: every check that can be made before a run exists;
    raises ValueError with the reason."""
    from ..data import parse_dataset_spec, verify_dataset
    from ..models.factory import check_backbone_name

    check_backbone_name(config.backbone)
    if config.checkpoint is not None:
        check_checkpoint(config.checkpoint)
    check_workers(config)
    parse_dataset_spec(config.dataset)
    check_prompts(config.prompt)
    device = check_device(config.device)
    check_hub(config)
    splits = verify_dataset(config.dataset, [config.train_split, *config.eval_splits],
                            seed=config.data_seed)
    train = splits[config.train_split]
    if config.batch_size > len(train):
        raise ValueError(f"batch size {config.batch_size} is larger than the training split "
                         f"({train.describe()})")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by the {world} "
                         "processes of this torchrun")
    check_model(config, train.num_classes, device)
