"""Are the import tests' torch references, and our Flax backbones, the same networks as timm's?

    pip install --no-deps timm==1.0.31 && python bench/timm_replica_check.py [--skip-flax]

The import tests compare our Flax backbones with torch.nn replicas of timm's layouts
(tests/torch_vit.py, tests/torch_convnext.py), because timm imports torchvision, whose PyPI
wheel links CUDA libraries that the CPU torch of the test machines lacks. This check runs timm
itself beside them: torchvision is replaced by empty stand-in modules for the duration (timm's
ViT and ConvNeXt use nothing of it). For every family -- ViT-S/16, CLIP ViT-B/16 (pre-norm,
quick GELU, projection), DINOv2 ViT-S/14 with registers and LayerScale, DINOv2's giant
(SwiGLU; two blocks to keep it cheap), SigLIP ViT-B/16 (no class token, attention pooling)
and its GAP variant, ConvNeXt-T/S/B with average and max pooling -- timm's model, built
without pretrained weights, loads the replica's random state dict with strict=True (same keys
and shapes), and the max abs differences of the pooled feature (timm's pre-logits) are printed:
timm against the replica, and timm against our Flax model given the same state dict as a
safetensors file (the import path users take). It also checks timm's position-embedding
resampling against ours, prints timm's ConvNeXt parameter counts, and compares the layer ids
of `optim.layer_decay` (`dnc_jax.training.optim.layer_id`) with timm's
`param_groups_layer_decay` for every backbone parameter (timm's models built with their
classifier, as fine-tuning recipes use them; our embedding head is the classifier's place).
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile
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


# (timm model, timm kwargs, replica kwargs, our model.name, our model.vit options, pooling)
_VIT_CASES = [
    ("vit_small_patch16_224", {}, dict(patch=16, width=384, depth=12, heads=6),
     "vit_s16", {}, "token"),
    ("vit_base_patch16_clip_quickgelu_224", dict(num_classes=512),
     dict(patch=16, width=768, depth=12, heads=12, pre_norm=True, act="quick_gelu", eps=1e-5,
          projection=512),
     "vit_b16", dict(pre_norm=True, act="quick_gelu", norm_eps=1e-5, projection=512), "token"),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=224),
     dict(patch=14, width=384, depth=12, heads=6, layer_scale=True, reg_tokens=4,
          no_embed_class=True),
     "vit_s14", dict(layer_scale=True, reg_tokens=4, no_embed_class=True), "token"),
    ("vit_giant_patch14_dinov2", dict(img_size=224, depth=2),
     dict(patch=14, width=1536, depth=2, heads=24, act="silu", layer_scale=True,
          mlp="swiglu", mlp_hidden=8192),
     "vit_g14", dict(layer_scale=True, act="silu", mlp="swiglu"), "token"),
    ("vit_base_patch16_siglip_224", {},
     dict(patch=16, width=768, depth=12, heads=12, class_token=False, global_pool="map"),
     "vit_b16", dict(class_token=False), "map"),
    ("vit_base_patch16_siglip_gap_224", {},
     dict(patch=16, width=768, depth=12, heads=12, class_token=False, global_pool="avg"),
     "vit_b16", dict(class_token=False), "avg"),
]
_CONVNEXT_CASES = [("convnext_tiny", (3, 3, 9, 3), (96, 192, 384, 768)),
                   ("convnext_small", (3, 3, 27, 3), (96, 192, 384, 768)),
                   ("convnext_base", (3, 3, 27, 3), (128, 256, 512, 1024))]


def _flax_pooled(name, pooling, vit_options, state, images_nchw, workdir, depth=None):
    """Our Flax model's pooled feature with `state` imported from a safetensors file, as a
    run imports its weights (`initial_variables`); `depth`: fewer ViT blocks than the size's
    (the giant's two)."""
    import dataclasses

    import jax
    import ml_collections
    import numpy as np

    from dnc_jax.models.embedder import make_embedder
    from dnc_jax.models.variables import initial_variables
    from tests.backbone_parity import save_safetensors

    path = save_safetensors(state, os.path.join(workdir, f"{name}.safetensors"))
    config = ml_collections.ConfigDict(dict(
        name=name, width=64, stem="imagenet", bn_frozen=True, pooling=pooling, dropout=0.0,
        embedding_dim=16, head_init="pt_default", pretrained=path, vit=dict(vit_options)))
    model = make_embedder(config)
    if depth is not None:
        arch = dataclasses.replace(model.backbone.arch, depth=depth)
        model = model.clone(backbone=model.backbone.clone(arch=arch))
    images = np.ascontiguousarray(images_nchw.numpy().transpose(0, 2, 3, 1))
    params, stats = initial_variables(model, config, 1, jax.random.key(0), images.shape[1])
    return np.asarray(model.apply({"params": params, "batch_stats": stats}, images)["pooled"])


def _report(label, want, replica, flax):
    import numpy as np

    want = want.numpy()
    line = (f"{label}: pooled std {want.std():.3f}; replica vs timm "
            f"{np.abs(want - replica.numpy()).max():.2e}")
    if flax is not None:
        line += f"; ours (Flax) vs timm {np.abs(want - flax).max():.2e}"
    print(line, flush=True)


def check_vits(images, workdir, flax):
    import timm
    import torch

    from tests.torch_vit import TorchViT, random_state_dict

    for name, timm_kwargs, replica_kwargs, ours, vit_options, pooling in _VIT_CASES:
        theirs = timm.create_model(name, pretrained=False, **{"num_classes": 0, **timm_kwargs})
        replica = TorchViT(image_size=224, **replica_kwargs)
        state = random_state_dict(replica, seed=1)
        for key in [k for k in state if k.endswith(".gamma")]:  # LayerScale that counts
            state[key] = 0.5 + 0.1 * torch.randn(state[key].shape)
        if "head.bias" in state:  # OpenAI's projection has no bias; timm's is zero
            state["head.bias"] = torch.zeros_like(state["head.bias"])
        theirs.load_state_dict(state, strict=True)  # same keys and shapes as timm's
        replica.load_state_dict(state, strict=True)
        theirs.eval(), replica.eval()
        with torch.no_grad():
            want = theirs(images)  # num_classes=0: the pre-logits; CLIP's: the projection
            got = replica.forward_head(replica.forward_features(images))
        ours_pooled = (_flax_pooled(ours, pooling, vit_options, state, images, workdir,
                                    timm_kwargs.get("depth")) if flax else None)
        _report(f"{name}{' (depth 2)' if 'depth' in timm_kwargs else ''}", want, got,
                ours_pooled)


def check_convnexts(images, workdir, flax):
    import timm
    import torch

    from tests.torch_convnext import TorchConvNeXt, random_state_dict

    for name, depths, dims in _CONVNEXT_CASES:
        theirs = timm.create_model(name, pretrained=False, num_classes=0).eval()
        replica = TorchConvNeXt(depths, dims).eval()
        state = random_state_dict(replica, seed=1)
        theirs.load_state_dict(state, strict=True)
        replica.load_state_dict(state, strict=True)
        for pooling in ("avg", "max"):
            theirs.reset_classifier(0, pooling)
            with torch.no_grad():
                want = theirs.forward_head(theirs.forward_features(images), pre_logits=True)
                got = replica.pre_logits(images, pooling)
            ours_pooled = (_flax_pooled(name, pooling, {}, state, images, workdir)
                           if flax else None)
            _report(f"{name} ({pooling} pool)", want, got, ours_pooled)
        count = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        print(f"{name}: timm's parameters with the 1000-class head: {count:,}", flush=True)


def check_resampling():
    import numpy as np
    import torch
    from timm.layers import resample_abs_pos_embed

    from dnc_jax.models.vit_import import resample_pos_embed

    pos = torch.randn(1, 1 + 14 * 14, 384, generator=torch.Generator().manual_seed(2))
    for side in (7, 10, 20):
        want = resample_abs_pos_embed(pos, new_size=(side, side), num_prefix_tokens=1,
                                      interpolation="bicubic", antialias=True)
        got = resample_pos_embed(pos.numpy(), (side, side))
        print(f"pos_embed 14x14 -> {side}x{side}: ours vs timm, max abs difference "
              f"{float(np.abs(want.numpy() - got).max()):.2e}")
    dinov2 = torch.randn(1, 4 + 37 * 37, 384, generator=torch.Generator().manual_seed(3))
    want = resample_abs_pos_embed(dinov2[:, 4:], new_size=(16, 16), num_prefix_tokens=0,
                                  interpolation="bicubic", antialias=True)
    got = resample_pos_embed(dinov2[:, 4:].numpy(), (16, 16), prefix_tokens=0)
    print(f"pos_embed 37x37 (DINOv2 at 518 px) -> 16x16: ours vs timm, max abs difference "
          f"{float(np.abs(want.numpy() - got).max()):.2e}")


def check_layer_ids():
    """Our layer id of every backbone parameter against timm's layer map and lr_scale."""
    import dataclasses

    import flax.traverse_util
    import jax
    import jax.numpy as jnp
    import ml_collections
    import timm
    from timm.models import group_parameters
    from timm.optim._param_groups import param_groups_layer_decay

    from dnc_jax.models import convnext_import, vit_import
    from dnc_jax.models.embedder import make_embedder
    from dnc_jax.training import optim

    decay = 0.5
    cases = [(name, timm_kwargs, ours, vit_options, pooling, vit_import.timm_key)
             for name, timm_kwargs, _, ours, vit_options, pooling in _VIT_CASES]
    cases += [(name, {}, name, {}, "avg", convnext_import.timm_key)
              for name, _, _ in _CONVNEXT_CASES]
    for name, timm_kwargs, ours, vit_options, pooling, timm_key in cases:
        # With a classifier (DINOv2's and SigLIP's timm defaults have none, which would move
        # the final norm's group to the top): our embedding head takes its place.
        theirs = timm.create_model(name, pretrained=False, **{"num_classes": 1000,
                                                               **timm_kwargs})
        layer_map = group_parameters(theirs, theirs.group_matcher(coarse=False), reverse=True)
        names_of = {id(p): n for n, p in theirs.named_parameters()}
        scale_of = {names_of[id(p)]: group["lr_scale"]
                    for group in param_groups_layer_decay(theirs, layer_decay=decay)
                    for p in group["params"]}
        config = ml_collections.ConfigDict(dict(
            name=ours, width=64, stem="imagenet", bn_frozen=True, pooling=pooling,
            dropout=0.0, embedding_dim=16, head_init="pt_default", pretrained="",
            vit=dict(vit_options)))
        model = make_embedder(config)
        if "depth" in timm_kwargs:  # the giant's two blocks
            arch = dataclasses.replace(model.backbone.arch, depth=timm_kwargs["depth"])
            model = model.clone(backbone=model.backbone.clone(arch=arch))
        shapes = jax.eval_shape(lambda: model.init(
            jax.random.key(0), jnp.zeros((1, 224, 224, 3))))["params"]["backbone"]
        paths = list(flax.traverse_util.flatten_dict(shapes))
        layout = optim.backbone_layout(paths)
        top = sum(layout.depths) + 1
        ids = {timm_key(p): optim.layer_id(p, layout) for p in paths}
        bad = [k for k, v in ids.items()
               if k not in layer_map or v != layer_map[k] or decay ** (top - v) != scale_of[k]]
        left_out = sorted({k.split(".")[0] for k in set(layer_map) - set(ids)})
        print(f"{name} layer ids: {len(ids)} backbone parameters, ids 0..{top} (timm "
              f"0..{max(layer_map.values())}), mismatches {len(bad)} {bad[:4]}; timm's "
              f"parameters not in our backbone: {left_out}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-flax", action="store_true",
                        help="compare timm with the torch replicas only")
    parser.add_argument("--only", choices=("vits", "convnexts", "resampling", "layer_ids"),
                        help="run one part of the check")
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.meta_path.insert(0, _StubFinder())
    import timm
    import torch

    print(f"timm {timm.__version__}, torch {torch.__version__}", flush=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as workdir:
        if args.only in (None, "vits"):
            check_vits(images, workdir, flax=not args.skip_flax)
        if args.only in (None, "convnexts"):
            check_convnexts(images, workdir, flax=not args.skip_flax)
    if args.only in (None, "resampling"):
        check_resampling()
    if args.only in (None, "layer_ids"):
        check_layer_ids()


if __name__ == "__main__":
    main()
