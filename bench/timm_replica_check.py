"""Is tests/torch_vit.py (the ViT import tests' reference) the same network as timm's?

    pip install --no-deps timm==1.0.31 && python bench/timm_replica_check.py

The import tests compare our Flax ViT with a torch.nn replica of timm's VisionTransformer,
because timm imports torchvision, whose PyPI wheel links CUDA libraries that the CPU torch of
the test machines lacks. This check runs timm itself beside the replica on the same random
state dict: torchvision is replaced by empty stand-in modules for the duration (timm's ViT
uses nothing of it), so only the ViT code paths are meaningful. It prints the max abs
differences of the tokens (ViT-S/16; CLIP's ViT-B/16 with pre-norm and quick GELU) and of
timm's position-embedding resampling against ours.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


class _StandIn(type):
    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return attr  # enum members such as InterpolationMode.BILINEAR


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any `torchvision[.x]` import gives a module whose every attribute is a stand-in class."""

    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def attribute(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _StandIn(attr, (), {"__init__": lambda self, *a, **k: None})

        module.__getattr__ = attribute
        return module

    def exec_module(self, module):
        pass


def main():
    sys.meta_path.insert(0, _StubFinder())
    import numpy as np
    import timm
    import torch
    from timm.layers import resample_abs_pos_embed

    from dnc_jax.models.vit_import import resample_pos_embed
    from tests.torch_vit import TorchViT, random_state_dict

    print(f"timm {timm.__version__}, torch {torch.__version__}")
    cases = [
        ("vit_small_patch16_224", dict(patch=16, width=384, depth=12, heads=6)),
        ("vit_base_patch16_clip_quickgelu_224",
         dict(patch=16, width=768, depth=12, heads=12, pre_norm=True, act="quick_gelu", eps=1e-5)),
    ]
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for name, kwargs in cases:
        theirs = timm.create_model(name, pretrained=False, num_classes=0).eval()
        ours = TorchViT(image_size=224, **kwargs).eval()
        state = random_state_dict(ours, seed=1)
        theirs.load_state_dict(state, strict=True)  # same keys and shapes as timm's
        ours.load_state_dict(state, strict=True)
        with torch.no_grad():
            diff = (theirs.forward_features(images) - ours.forward_features(images)).abs().max()
        print(f"{name}: replica vs timm, max abs token difference {float(diff):.2e}")
    pos = torch.randn(1, 1 + 14 * 14, 384, generator=torch.Generator().manual_seed(2))
    for side in (7, 10, 20):
        want = resample_abs_pos_embed(pos, new_size=(side, side), num_prefix_tokens=1,
                                      interpolation="bicubic", antialias=True)
        got = resample_pos_embed(pos.numpy(), (side, side))
        print(f"pos_embed 14x14 -> {side}x{side}: ours vs timm, max abs difference "
              f"{float(np.abs(want.numpy() - got).max()):.2e}")


if __name__ == "__main__":
    main()
