"""What the backbone parity tests share: the real photographs as a model's input, a torch
state dict written as the safetensors file `model.pretrained` reads, and our model's outputs
with those weights (tests/test_vit.py, test_vit_variants.py, test_convnext.py)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

from dnc_jax.data.views import augment
from dnc_jax.models.embedder import make_embedder
from dnc_jax.models.variables import initial_variables


def sample_photos(side: int, normalization="imagenet") -> np.ndarray:
    """float32 [2, side, side, 3]: scikit-learn's two sample photographs, center square,
    resized (bilinear) and normalised as the weights expect."""
    views = []
    for photo in load_sample_images().images:
        h, w = photo.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        square = Image.fromarray(photo[top:top + s, left:left + s])
        views.append(np.asarray(square.resize((side, side), Image.BILINEAR), np.float32))
    return np.asarray(augment.normalize(jnp.asarray(np.stack(views)), normalization))


def save_safetensors(state_dict, path) -> str:
    """A torch state dict as a safetensors file; returns its path."""
    from safetensors.numpy import save_file

    save_file({k: v.numpy().copy() for k, v in state_dict.items()}, str(path))
    return str(path)


def backbone_and_pooled(model_config, path, side, images):
    """(backbone output, pooled feature) of our embedder with the weights at `path`."""
    model_config.pretrained = path
    model = make_embedder(model_config, jnp.float32)
    params, stats = initial_variables(model, model_config, 1, jax.random.key(0), side)
    backbone = model.backbone.apply({"params": params["backbone"]}, jnp.asarray(images))
    pooled = model.apply({"params": params, "batch_stats": stats}, jnp.asarray(images))["pooled"]
    return np.asarray(backbone), np.asarray(pooled)


def vit_micro_config(pooling="token", **vit_options) -> ml_collections.ConfigDict:
    """A `model` section for vit_micro with these `model.vit` options (the rest default)."""
    return ml_collections.ConfigDict(dict(
        name="vit_micro", width=64, stem="imagenet", bn_frozen=True, pooling=pooling,
        dropout=0.0, embedding_dim=16, head_init="pt_default", pretrained="",
        vit=dict(dict(pre_norm=False, act="gelu", norm_eps=1e-6, drop_path=0.0), **vit_options)))
