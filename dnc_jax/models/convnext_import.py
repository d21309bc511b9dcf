"""Import timm ConvNeXt weights (`timm/convnext_tiny.fb_in22k`, ...) into our Flax tree.

The state dict is read as for the ResNet and the ViT (`pretrained.read_state_dict`:
safetensors, npz, pth or a Hugging Face hub id). timm layout -> ours: `stem.0.weight`
[C, 3, 4, 4] -> `stem_0/kernel` [4, 4, 3, C]; `stages.{s}.downsample.{0,1}` ->
`stages_{s}/downsample_{0,1}`; `stages.{s}.blocks.{b}.conv_dw.weight` [C, 1, 7, 7] ->
`.../conv_dw/kernel` [7, 7, 1, C]; `mlp.fc{1,2}.weight` [out, in] -> `kernel` [in, out];
LayerNorm `weight`/`bias` -> `scale`/`bias`; `gamma` as it is; `head.norm` -> `head/norm`.
The classifier `head.fc.*` is not used.

The facebook ConvNeXt checkpoints (fb_in1k, fb_in22k, fb_in22k_ft_in1k) expect ImageNet's
mean/std (`augment.normalization='imagenet'`); `pretrained.check_normalization` enforces what
timm's config.json says when there is one. The original facebook layout
(`downsample_layers.*`, `dwconv`, `pwconv1`) is not read: timm's hub copies are in its layout.
"""
from __future__ import annotations

import flax.traverse_util
import numpy as np

from dnc_jax.models import pretrained, vit_import

_IGNORED_PREFIXES = ("head.fc.",)
_INDEXED = ("stem_", "stages_", "downsample_", "blocks_")
# Keys of other ConvNeXt layouts and variants, and what to say about them.
_UNSUPPORTED = {
    "downsample_layers.": "the original facebookresearch layout: use timm's hub copy "
                          "(timm/convnext_*), whose keys are timm's",
    "pwconv": "the original facebookresearch layout: use timm's hub copy (timm/convnext_*)",
    ".grn.": "ConvNeXt-V2's global response norm",
    "head.pre_logits.": "an MLP head (convnext_large_mlp)",
    "norm_pre.": "a norm before pooling (timm's head_norm_first variants)",
}


def timm_key(flax_path: tuple[str, ...]) -> str:
    """('stages_2', 'blocks_4', 'mlp', 'fc1', 'kernel') -> 'stages.2.blocks.4.mlp.fc1.weight'."""
    *modules, leaf = flax_path
    parts = []
    for m in modules:
        parts += m.rsplit("_", 1) if m.startswith(_INDEXED) else [m]
    if leaf == "gamma":
        return ".".join(parts + [leaf])
    return ".".join(parts + [{"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]])


def _hints(unknown, missing) -> list[str]:
    hints = []
    for marker, what in _UNSUPPORTED.items():
        if any(marker in k for k in unknown):
            hints.append(f"{what} is not built by this library's ConvNeXt")
    if any(k.startswith("head.norm.") for k in missing) and not unknown:
        hints.append("a checkpoint without the final norm (timm's fcmae pre-training) does "
                     "not fit")
    return hints


def load_convnext_backbone(state_dict: dict[str, np.ndarray], backbone_params):
    """New backbone params with every tensor from the timm `state_dict`; a WeightImportError
    listing every unknown, missing and mis-shaped key otherwise."""
    flat = flax.traverse_util.flatten_dict(backbone_params)
    wanted = {timm_key(path): (path, tuple(v.shape)) for path, v in flat.items()}
    used = {k for k in state_dict if not k.startswith(_IGNORED_PREFIXES)}
    out = pretrained.map_tensors(
        state_dict, wanted, used,
        convert=lambda key, value, path, shape: vit_import._to_flax(value, path[-1]),
        file_shape=lambda shape, path: vit_import._torch_shape(shape, path[-1]),
        hints=_hints)
    return flax.traverse_util.unflatten_dict(out)


def backbone_state_dict(backbone_params) -> dict[str, np.ndarray]:
    """The inverse of `load_convnext_backbone`: {timm key: float32 array in torch's layout}."""
    return vit_import.backbone_state_dict(backbone_params, key=timm_key)
