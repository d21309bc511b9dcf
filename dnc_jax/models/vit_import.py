"""Import timm Vision Transformer weights (DINO, CLIP, ImageNet-21k, ...) into our Flax tree.

The state dict is read as for the ResNet (`pretrained.read_state_dict`: safetensors, npz, pth
or a Hugging Face hub id such as `timm/vit_small_patch16_224.dino`). timm layout -> ours:
`blocks.{i}.attn.qkv.weight` [out, in] -> `blocks_{i}/attn/qkv/kernel` [in, out];
`patch_embed.proj.weight` [D, 3, p, p] -> `patch_embed/proj/kernel` [p, p, 3, D]; LayerNorm
`weight`/`bias` -> `scale`/`bias`; `cls_token`, `reg_token`, `pos_embed` and LayerScale's
`blocks.{i}.ls1.gamma`/`ls2.gamma` as they are; `fc_norm.*` with model.pooling=fc_norm;
SigLIP's `attn_pool.*` (latent, q, kv, proj, norm, mlp) with model.pooling=map. DINOv2 giant's
SwiGLU MLP has the plain MLP's key names (`mlp.fc1` packs both halves), told apart by fc2's
input being half fc1's output. The classifier `head.*` is not used, except as CLIP's output
projection (model.vit.projection).

A checkpoint made at another resolution has a position-embedding grid of another size: it is
resampled to the model's grid as timm does when it loads such a checkpoint (bicubic with
torch's antialiasing, the class and register tokens' rows kept), see `resample_pos_embed`;
DINOv2's 518 px grid of 37 x 37 becomes 16 x 16 for a 224 px crop of 14 px patches.
QK-norm and timm's unpacked SwiGLU (`mlp.fc1_g`, EVA's) are refused with their names.
"""
from __future__ import annotations

import math

import flax.traverse_util
import numpy as np

from dnc_jax.errors import ConfigError
from dnc_jax.models import pretrained

_IGNORED_PREFIXES = ("head.",)
# Keys of timm ViT variants this layout does not build, and what to say about them.
_UNSUPPORTED = {
    "attn.q_norm.": "QK-norm",
    "mlp.fc1_g.": "timm's unpacked SwiGLU MLP (fc1_g/fc1_x: EVA)",
}
# Keys of timm ViT options this layout builds when the config asks: (marker of the option's
# keys, the key the option adds first, the config when the file has such keys, the config when
# it lacks the first).
_OPTIONS = (
    ("norm_pre.weight", "norm_pre.weight",
     "the checkpoint has a pre-norm (CLIP): set model.vit.pre_norm=True",
     "the checkpoint has no pre-norm: set model.vit.pre_norm=False"),
    (".ls1.gamma", "blocks.0.ls1.gamma",
     "the checkpoint has LayerScale (DINOv2, DeiT-III): set "
     "model.vit.layer_scale=True", "the checkpoint has no LayerScale: set "
     "model.vit.layer_scale=False"),
    ("reg_token", "reg_token",
     "the checkpoint has register tokens: set model.vit.reg_tokens to their count "
     "(reg_token's second dimension) and, for timm's reg4 ViTs, model.vit.no_embed_class=True",
     "the checkpoint has no register tokens: set model.vit.reg_tokens=0"),
    ("fc_norm.weight", "fc_norm.weight",
     "the checkpoint pools the patch tokens into a norm (timm's global_pool='avg' with "
     "fc_norm): set model.pooling=fc_norm",
     "the checkpoint has no fc_norm: set model.pooling to token, avg or max"),
    ("attn_pool.", "attn_pool.latent",
     "the checkpoint pools with attention (SigLIP's MAP head, attn_pool.*): set "
     "model.pooling=map",
     "the checkpoint has no attention pooling head (attn_pool.*): set model.pooling to "
     "token, avg, max or fc_norm"),
    ("cls_token", "cls_token",
     "the checkpoint has a class token: set model.vit.class_token=True",
     "the checkpoint has no class token (SigLIP): set model.vit.class_token=False"),
    (None, "head.weight", None,  # `head.*` is never unknown: ignored without a projection
     "the checkpoint has no projection (head.weight): set model.vit.projection=0"),
)


# -- position embeddings --------------------------------------------------------------------

def _aa_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """float64 [out, in] weights of torch's antialiased bicubic resize along one axis
    (`F.interpolate(mode='bicubic', antialias=True, align_corners=False)`): the Keys kernel
    with a = -0.5, stretched by the scale when shrinking, each row normalised to sum 1."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = np.abs((np.arange(lo, hi) - center + 0.5) * inv_scale)
        w = np.where(x < 1.0, (1.5 * x - 2.5) * x * x + 1.0,
                     np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5, 0.0))
        total = w.sum()
        weights[i, lo:hi] = w / total if total != 0 else w
    return weights


def resample_pos_embed(pos_embed: np.ndarray, grid: tuple[int, int],
                       prefix_tokens: int = 1) -> np.ndarray:
    """[1, prefix + h*w, D] -> [1, prefix + grid[0]*grid[1], D]: the patch rows resampled as
    an h x w image (square when the checkpoint's grid is), the prefix (class token) rows kept."""
    prefix, patches = pos_embed[:, :prefix_tokens], pos_embed[0, prefix_tokens:]
    side = math.isqrt(patches.shape[0])
    if side * side != patches.shape[0]:
        raise ConfigError(f"pos_embed has {patches.shape[0]} patch rows, not a square grid")
    image = patches.reshape(side, side, -1).astype(np.float64)
    rows, cols = _aa_bicubic_weights(side, grid[0]), _aa_bicubic_weights(side, grid[1])
    out = np.einsum("ih,jw,hwd->ijd", rows, cols, image).reshape(1, grid[0] * grid[1], -1)
    return np.concatenate([prefix, out.astype(pos_embed.dtype)], axis=1)


# -- names ----------------------------------------------------------------------------------

def timm_key(flax_path: tuple[str, ...]) -> str:
    """('blocks_3', 'attn', 'qkv', 'kernel') -> 'blocks.3.attn.qkv.weight'."""
    *modules, leaf = flax_path
    parts = []
    for m in modules:
        parts += m.split("_", 1) if m.startswith("blocks_") else [m]
    if not modules:  # cls_token, pos_embed
        return leaf
    return ".".join(parts + [{"kernel": "weight", "scale": "weight", "bias": "bias",
                              "gamma": "gamma", "latent": "latent"}[leaf]])


def backbone_state_dict(backbone_params, key=None) -> dict[str, np.ndarray]:
    """The inverse of the import: {timm key: float32 array in torch's layout} of a backbone in
    timm's names (`key`: flax path -> timm key, this module's `timm_key` by default; the
    ConvNeXt passes its own)."""
    key = key or timm_key
    out = {}
    for path, value in flax.traverse_util.flatten_dict(backbone_params).items():
        array = np.asarray(value, np.float32)
        if path[-1] == "kernel" and array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)  # [kh, kw, I, O] -> [O, I, kh, kw]
        elif path[-1] == "kernel" and array.ndim == 2:
            array = array.T
        out[key(path)] = np.ascontiguousarray(array)
    return out


def _to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:  # conv [O, I, kh, kw] -> [kh, kw, I, O]
        return array.transpose(2, 3, 1, 0)
    if leaf == "kernel" and array.ndim == 2:  # Linear [out, in] -> [in, out]
        return array.T
    return array


def _mlp_layout(shapes) -> tuple[str, int] | None:
    """('swiglu' | 'plain', fc1's width) of the first block's MLP from {key: shape} in
    timm's [out, in] layout; None without one."""
    fc1, fc2 = shapes.get("blocks.0.mlp.fc1.weight"), shapes.get("blocks.0.mlp.fc2.weight")
    if fc1 is None or fc2 is None or len(fc1) != 2 or len(fc2) != 2:
        return None
    return ("swiglu" if fc1[0] == 2 * fc2[1] else "plain"), fc1[0]


def _mlp_hints(file_shapes, model_shapes) -> list[str]:
    """What to set when the checkpoint's block MLP is not the model's (SwiGLU or width)."""
    theirs, ours = _mlp_layout(file_shapes), _mlp_layout(model_shapes)
    if theirs is None or ours is None or theirs == ours:
        return []
    kind, width = theirs
    return [f"the checkpoint's block MLP is {'SwiGLU' if kind == 'swiglu' else 'plain'} "
            f"with fc1 {width} wide: set model.vit.mlp={kind}"
            + ("" if width == ours[1] else f" and model.vit.mlp_hidden={width}")
            + (" (DINOv2's giant: model.vit.act=silu)" if kind == "swiglu" else "")]


def _hints(unknown, missing) -> list[str]:
    hints = []
    for marker, first, when_present, when_absent in _OPTIONS:
        if marker and any(marker in k for k in unknown):
            hints.append(when_present)
        if first in missing:
            hints.append(when_absent)
    for marker, what in _UNSUPPORTED.items():
        if any(marker in k for k in unknown):
            hints.append(f"{what} is not built by this library's ViT")
    return hints


def load_vit_backbone(state_dict: dict[str, np.ndarray], backbone_params):
    """New backbone params with every tensor from the timm `state_dict`; the position
    embeddings resampled when the checkpoint's grid differs from the model's."""
    flat = flax.traverse_util.flatten_dict(backbone_params)
    wanted = {timm_key(path): (path, tuple(v.shape)) for path, v in flat.items()}
    used = {k for k in state_dict if not k.startswith(_IGNORED_PREFIXES)}
    file_shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    model_shapes = {k: _torch_shape(shape, path[-1]) for k, (path, shape) in wanted.items()}
    out = pretrained.map_tensors(
        state_dict, wanted, used, convert=_convert,
        file_shape=lambda shape, path: _torch_shape(shape, path[-1]),
        hints=lambda unknown, missing: (_hints(unknown, missing)
                                        + _mlp_hints(file_shapes, model_shapes)))
    return flax.traverse_util.unflatten_dict(out)


def _convert(key, value, path, shape):
    value = _to_flax(value, path[-1])
    if key == "pos_embed" and value.shape != shape and value.shape[2:] == shape[2:]:
        side, prefix = prefix_rows(shape[1])
        if math.isqrt(value.shape[1] - prefix) ** 2 == value.shape[1] - prefix:
            value = resample_pos_embed(value, (side, side), prefix)
    return value


def prefix_rows(rows: int) -> tuple[int, int]:
    """(grid side, prefix rows) of a position embedding with `rows` rows: the grid is the
    largest square that fits, the rest are the class and register tokens' rows (none with
    timm's no_embed_class). Unambiguous while the prefix is at most twice the grid side (a
    5 x 5 grid takes up to 10 prefix tokens)."""
    side = math.isqrt(rows)
    return side, rows - side * side


def _torch_shape(shape, leaf):
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)
