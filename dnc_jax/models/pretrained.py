"""Import torchvision ResNet weights (the papers' ImageNet backbone) into our Flax tree.

Reads a torchvision-layout state dict from `.safetensors` or `.npz` (no pickle), or from a
`.pth`/`.pt` through `torch.load(weights_only=True)` when torch is installed, or from a
Hugging Face hub id (fetched with `huggingface_hub`, through its cache, so an offline machine
with a cached copy works). Every tensor must land on a parameter of the same shape: unknown,
missing or mis-shaped keys are errors that list the keys.

torchvision layout -> ours: `layer{s}.{b}.conv1.weight` [O, I, kh, kw] ->
`layer{s}_{b}/conv1/kernel` [kh, kw, I, O]; BatchNorm `weight`/`bias` -> params `scale`/`bias`,
`running_mean`/`running_var` -> batch_stats `mean`/`var`; `downsample.0` / `downsample.1` ->
`downsample/conv` / `downsample/bn`. The classifier `fc.*` and `num_batches_tracked` are not used.
(timm's Vision Transformers are mapped by `vit_import`, from the same `read_state_dict`.)

The normalisation a checkpoint expects is in timm's `config.json` (`pretrained_cfg.mean/std`)
beside the weight file or in the hub repository; when it is there, `check_normalization`
refuses a run whose `augment.normalization` differs (a silent mismatch costs accuracy).
"""
from __future__ import annotations

import json
import os

import flax.traverse_util
import numpy as np

from dnc_jax.data.views import augment
from dnc_jax.errors import ConfigError, DataError

# torchvision's ImageNet-1k V1 ResNet-50 weights (what the papers fine-tune), published in
# safetensors form with torchvision's key names.
DEFAULT_HUB_ID = "timm/resnet50.tv_in1k"
_HUB_FILENAME = "model.safetensors"
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)


class WeightImportError(DataError):
    """A weight file that does not fit the model; the message lists the offending keys."""


def check_source(source: str) -> None:
    """A WeightImportError unless `source` is an existing file or looks like a hub id (which
    is fetched, or found in the cache, only when read): a run checks this before it writes."""
    if not os.path.exists(os.path.expanduser(source)) and not _looks_like_hub_id(source):
        raise WeightImportError(
            f"pretrained weights not found: {source} (set --config.model.pretrained to a "
            f".safetensors/.npz/.pth file or a Hugging Face hub id)")


def read_state_dict(source: str) -> dict[str, np.ndarray]:
    """{torch key: float32 numpy array} from a local file or a hub id."""
    check_source(source)
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        path = _hub_download(source)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        tensors = load_file(path)
    elif path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            tensors = {k: f[k] for k in f.files}
    elif path.endswith((".pth", ".pt")):
        tensors = _torch_load(path)
    else:
        raise WeightImportError(f"{path}: unknown weight format (use .safetensors, .npz or .pth)")
    # Checkpoints saved from DataParallel prefix every key with 'module.'.
    return {k.removeprefix("module."): np.asarray(v, np.float32) for k, v in tensors.items()}


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _hub_download(repo_id: str) -> str:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is in requirements.txt
        raise WeightImportError(
            f"{repo_id} is a hub id but huggingface_hub is not installed") from None
    try:
        return hf_hub_download(repo_id, _HUB_FILENAME)
    except LocalEntryNotFoundError:
        raise WeightImportError(
            f"pretrained weights {repo_id} are not in the Hugging Face cache and the hub cannot "
            f"be reached: download {_HUB_FILENAME} from the hub page of {repo_id} and pass "
            f"--config.model.pretrained=/path/to/{_HUB_FILENAME}") from None
    except Exception as e:  # repository or file missing, authentication, ...
        raise WeightImportError(f"cannot fetch {repo_id}/{_HUB_FILENAME}: {e}") from None


def _torch_load(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightImportError(
            f"{path}: reading .pth needs torch; convert it to .safetensors or install torch"
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def torch_key(flax_path: tuple[str, ...], collection: str) -> str:
    """('layer1_0', 'downsample', 'bn', 'mean') in batch_stats ->
    'layer1.0.downsample.1.running_mean'."""
    *modules, leaf = flax_path
    parts = []
    for m in modules:
        if m.startswith("layer") and "_" in m:
            stage, block = m.split("_")
            parts += [stage, block]
        elif m == "downsample":
            parts.append("downsample")
        elif parts and parts[-1] == "downsample":
            parts.append({"conv": "0", "bn": "1"}[m])
        else:
            parts.append(m)
    leaf = {("params", "kernel"): "weight", ("params", "scale"): "weight",
            ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
            ("batch_stats", "var"): "running_var"}[(collection, leaf)]
    return ".".join(parts + [leaf])


def _to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
    return array.transpose(2, 3, 1, 0) if leaf == "kernel" and array.ndim == 4 else array


def load_backbone(state_dict: dict[str, np.ndarray], backbone_params, backbone_stats):
    """New (params, batch_stats) of the backbone with every tensor from `state_dict`."""
    flat = {("params",) + k: v for k, v in
            flax.traverse_util.flatten_dict(backbone_params).items()}
    flat.update({("batch_stats",) + k: v for k, v in
                 flax.traverse_util.flatten_dict(backbone_stats).items()})
    wanted = {torch_key(path[1:], path[0]): (path, tuple(v.shape)) for path, v in flat.items()}
    used = {k for k in state_dict
            if not k.endswith(_IGNORED_SUFFIXES) and not k.startswith(_IGNORED_PREFIXES)}
    out = map_tensors(state_dict, wanted, used,
                      convert=lambda key, value, path, shape: _to_flax(value, path[-1]),
                      file_shape=lambda shape, path: _torch_shape(shape, path[-1]))
    params = flax.traverse_util.unflatten_dict({p[1:]: v for p, v in out.items()
                                                if p[0] == "params"})
    stats = flax.traverse_util.unflatten_dict({p[1:]: v for p, v in out.items()
                                               if p[0] == "batch_stats"})
    return params, stats


def backbone_state_dict(backbone_params, backbone_stats) -> dict[str, np.ndarray]:
    """The inverse of `load_backbone`: {torchvision key: float32 array in torch's layout}, so
    that a backbone trained here (`dnc-jax backbone`) is a `model.pretrained` file, and one
    torchvision reads into its ResNet of the same depth and width."""
    out = {}
    for collection, tree in (("params", backbone_params), ("batch_stats", backbone_stats)):
        for path, value in flax.traverse_util.flatten_dict(tree).items():
            array = np.asarray(value, np.float32)
            if path[-1] == "kernel" and array.ndim == 4:
                array = array.transpose(3, 2, 0, 1)  # [kh, kw, I, O] -> [O, I, kh, kw]
            out[torch_key(path, collection)] = np.ascontiguousarray(array)
    return out


def map_tensors(state_dict, wanted, used, convert, file_shape, hints=None) -> dict:
    """{model path: float32 array}: each wanted tensor of `state_dict` in the model's layout.

    `wanted`: {file key: (model path, model shape)}; `used`: the file keys the model should
    take (the rest, e.g. a classifier, is ignored); `convert(key, array, path, shape)`: the
    array in the model's layout; `file_shape(shape, path)`: the shape the file should have;
    `hints(unknown, missing)`: advice to append. Every unknown, missing or mis-shaped key is
    listed in one WeightImportError."""
    unknown = sorted(used - set(wanted))
    missing = sorted(set(wanted) - set(state_dict))
    out, misshaped = {}, []
    for key, (path, shape) in wanted.items():
        if key not in state_dict:
            continue
        value = convert(key, state_dict[key], path, shape)
        if value.shape != shape:
            misshaped.append(f"{key}: file {state_dict[key].shape}, model expects "
                             f"{file_shape(shape, path)}")
        out[path] = value.astype(np.float32)
    problems = []
    if unknown:
        problems.append(f"unknown keys {_listed(unknown)}")
    if missing:
        problems.append(f"missing keys {_listed(missing)}")
    if misshaped:
        problems.append(f"mis-shaped keys {_listed(misshaped)}")
    if problems:
        advice = hints(unknown, missing) if hints else []
        raise WeightImportError("pretrained weights do not fit model.name: "
                                + "; ".join(problems) + "".join(f" ({h})" for h in advice))
    return out


def _listed(keys, shown: int = 8) -> str:
    """The keys as a list, cut after `shown` with their count when there are more (a file of
    another depth misses hundreds: the line stays readable)."""
    if len(keys) <= shown + 2:
        return str(keys)
    return f"{str(keys[:shown])[:-1]}, ... ({len(keys)} in all)]"


def _torch_shape(shape, leaf):
    return (shape[3], shape[2], shape[0], shape[1]) if leaf == "kernel" and len(shape) == 4 \
        else tuple(shape)


# -- the normalisation the weights expect ---------------------------------------------------------------------

def expected_normalization(source: str) -> tuple[tuple, tuple] | None:
    """(mean, std) from timm's `config.json` next to a weight file or in a hub repository's
    cache; None when there is none (the user's own file: nothing to check against)."""
    path = os.path.expanduser(source)
    if os.path.exists(path):
        candidate = os.path.join(os.path.dirname(path), "config.json")
        config_path = candidate if os.path.exists(candidate) else None
    else:
        config_path = _cached_hub_config(source)
    if config_path is None:
        return None
    try:
        with open(config_path) as f:
            cfg = json.load(f).get("pretrained_cfg", {})
    except (OSError, ValueError, AttributeError):
        return None
    if "mean" not in cfg or "std" not in cfg:
        return None
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


def _cached_hub_config(repo_id: str) -> str | None:
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo_id, "config.json")
    except Exception:  # offline without a cached copy, no such file: nothing to check
        return None


def check_normalization(source: str, normalization: str) -> None:
    """A ConfigError when the checkpoint says it expects other mean/std than
    `augment.normalization` gives."""
    expected = expected_normalization(source)
    if expected is None:
        return
    given = augment.normalization_constants(normalization)
    if np.allclose(expected, given, atol=1e-4):
        return
    match = [name for name in augment.NORMALIZATIONS
             if np.allclose(expected, augment.normalization_constants(name), atol=1e-4)]
    advice = (f"set --config.augment.normalization={match[0]}" if match else
              "no augment.normalization matches it")
    raise ConfigError(
        f"augment.normalization={normalization!r} gives mean/std {given}, but {source} expects "
        f"{expected}: {advice}")
