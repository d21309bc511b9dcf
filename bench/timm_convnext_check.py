"""Is tests/torch_convnext.py (the ConvNeXt import tests' reference) the same network as timm's?

    pip install --no-deps timm==1.0.31 && python bench/timm_convnext_check.py

The companion of bench/timm_replica_check.py (which does this for the ViT, and whose
torchvision stand-in this reuses: timm imports torchvision, its ConvNeXt uses nothing of it).
timm's convnext_tiny, _small and _base, built without pretrained weights and without the
classifier, load the replica's random state dict with strict=True (same keys and shapes), and
their pre-logits (global average or max pool, then `head.norm`) are compared with the
replica's on the same random images. It also prints timm's parameter counts, which
tests/test_convnext.py checks our Flax tree against.
"""
from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timm_replica_check import _StubFinder  # noqa: E402

CASES = [("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768)),
         ("convnext_small", (3, 3, 27, 3), (96, 192, 384, 768)),
         ("convnext_base", (3, 3, 27, 3), (128, 256, 512, 1024))]


def main():
    sys.meta_path.insert(0, _StubFinder())
    import timm
    import torch

    from tests.torch_convnext import TorchConvNeXt, random_state_dict

    print(f"timm {timm.__version__}, torch {torch.__version__}")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for name, depths, dims in CASES:
        theirs = timm.create_model(name, pretrained=False, num_classes=0).eval()
        ours = TorchConvNeXt(depths, dims).eval()
        state = random_state_dict(ours, seed=1)
        theirs.load_state_dict(state, strict=True)  # same keys and shapes as timm's
        ours.load_state_dict(state, strict=True)
        for pooling in ("avg", "max"):
            theirs.reset_classifier(0, pooling)
            with torch.no_grad():
                want = theirs.forward_head(theirs.forward_features(images), pre_logits=True)
                diff = (want - ours.pre_logits(images, pooling)).abs().max()
            print(f"{name} ({pooling} pool): replica vs timm, max abs pre-logits difference "
                  f"{float(diff):.2e} (std {float(want.std()):.3f})")
        count = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        print(f"{name}: timm's parameters with the 1000-class head: {count:,}")


if __name__ == "__main__":
    main()
