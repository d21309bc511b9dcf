"""timm ViT variants beyond the plain layout: LayerScale (DINOv2, DeiT-III), register tokens
(timm's *_reg4_* ViTs, with and without no_embed_class), a 518 px DINOv2 position embedding
resampled to the crop's grid, timm's global_pool='avg' with fc_norm, and CLIP's output
projection.

The reference is `tests/torch_vit.py` (a torch replica of timm's VisionTransformer, see
tests/test_vit.py); tiny 32-64 px models on scikit-learn's sample photographs keep each test
to a few seconds.
"""
import jax
import numpy as np
import pytest

from dnc_jax import defaults
from dnc_jax.models import pretrained, vit, vit_import
from dnc_jax.models.embedder import check_model_config, make_embedder
from dnc_jax.models.variables import initial_variables
from tests.backbone_parity import (backbone_and_pooled, sample_photos, save_safetensors,
                                   vit_micro_config)
from tests.torch_optional import needs_torch, torch

if torch is not None:
    from tests.torch_vit import TorchViT, random_state_dict



_model_config = vit_micro_config


def _theirs(torch_model, images):
    """(tokens after the final norm, pooled feature) of the torch replica."""
    with torch.no_grad():
        tokens = torch_model.forward_features(
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        return tokens.numpy(), torch_model.forward_head(tokens).numpy()


def _random_state(model, seed):
    """random_state_dict with the LayerScale gammas drawn around 0.5 (both signs possible), so
    that a swapped or missing gamma changes the output."""
    state = random_state_dict(model, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    for key in state:
        if key.endswith(".gamma"):
            state[key] = 0.5 + 0.3 * torch.randn(state[key].shape, generator=gen)
    return state


@needs_torch
def test_layer_scale_matches_torch(tmp_path):
    reference = TorchViT(4, 64, 4, 4, 32, layer_scale=True).eval()
    state = _random_state(reference, seed=10)
    reference.load_state_dict(state, strict=True)
    path = save_safetensors(state, tmp_path / "ls.safetensors")
    images = sample_photos(32)
    want_tokens, want_pooled = _theirs(reference, images)
    tokens, pooled = backbone_and_pooled(_model_config("token", layer_scale=True), path, 32, images)
    diff = np.abs(pooled - want_pooled).max()
    print(f"LayerScale: pooled max abs difference {diff:.2e}, std {want_pooled.std():.3f}")
    assert want_pooled.std() > 0.1
    assert diff < 1e-4 and np.abs(tokens - want_tokens).max() < 1e-4


def test_layer_scale_starts_at_timms_init_values():
    config = _model_config(layer_scale=True)
    params, _ = initial_variables(make_embedder(config), config, 1, jax.random.key(0), 32)
    block = params["backbone"]["blocks_2"]
    for name in ("ls1", "ls2"):
        np.testing.assert_array_equal(block[name]["gamma"], np.full(64, 1e-5, np.float32))
    assert vit_import.timm_key(("blocks_2", "ls1", "gamma")) == "blocks.2.ls1.gamma"


@needs_torch
@pytest.mark.parametrize("no_embed_class", [True, False])
def test_register_tokens_match_torch_and_stay_out_of_pooling(tmp_path, no_embed_class):
    reference = TorchViT(4, 64, 4, 4, 32, layer_scale=True, reg_tokens=4,
                         no_embed_class=no_embed_class).eval()
    state = _random_state(reference, seed=11)
    reference.load_state_dict(state, strict=True)
    assert state["reg_token"].shape == (1, 4, 64)
    assert state["pos_embed"].shape[1] == 64 + (0 if no_embed_class else 5)
    path = save_safetensors(state, tmp_path / "reg.safetensors")
    images = sample_photos(32)
    want_tokens, want_pooled = _theirs(reference, images)
    without_registers = np.concatenate([want_tokens[:, :1], want_tokens[:, 5:]], 1)
    options = dict(layer_scale=True, reg_tokens=4, no_embed_class=no_embed_class)
    tokens, pooled = backbone_and_pooled(_model_config("token", **options), path, 32, images)
    assert tokens.shape == (2, 1 + 64, 64)  # the registers are dropped from the output
    assert np.abs(tokens - without_registers).max() < 1e-4
    diff = np.abs(pooled - want_pooled).max()
    # timm's global_pool='avg' leaves every prefix token out: the patch tokens' mean.
    _, pooled_avg = backbone_and_pooled(_model_config("avg", **options), path, 32, images)
    diff_avg = np.abs(pooled_avg - want_tokens[:, 5:].mean(1)).max()
    print(f"registers (no_embed_class={no_embed_class}): pooled max abs difference "
          f"token {diff:.2e}, avg {diff_avg:.2e}")
    assert diff < 1e-4 and diff_avg < 1e-4


def _torch_resample(pos_embed, grid, prefix):
    """timm's resample_abs_pos_embed written out: the prefix rows kept, the square patch grid
    resized by torch's antialiased bicubic."""
    side = int(round((pos_embed.shape[1] - prefix) ** 0.5))
    patches = pos_embed[:, prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(patches, size=grid, mode="bicubic",
                                              antialias=True, align_corners=False)
    return torch.cat([pos_embed[:, :prefix],
                      resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)], 1)


@needs_torch
@pytest.mark.parametrize("prefix", [0, 1, 5])
def test_dinov2_518_px_grid_resamples_to_224_px_as_torch(prefix):
    """DINOv2's 518 px checkpoints: a 37 x 37 grid of 14 px patches, to 16 x 16 for a 224 px
    crop (prefix rows: 1 class token; 0 with no_embed_class; 5 with four registers)."""
    pos = np.random.default_rng(prefix).normal(size=(1, prefix + 37 * 37, 8))
    want = _torch_resample(torch.from_numpy(pos), (16, 16), prefix).numpy()
    got = vit_import.resample_pos_embed(pos, (16, 16), prefix)
    assert np.abs(got - want).max() < 1e-10
    assert vit_import.prefix_rows(prefix + 16 * 16) == (16, prefix)
    vit.check_crop("vit_s14", 224)
    assert vit.architecture("vit_s14").patch_size == 14


@needs_torch
@pytest.mark.parametrize("reg_tokens, no_embed_class", [(0, False), (4, True)])
def test_checkpoint_grid_of_37_imports_at_a_16_grid_as_timm_does(tmp_path, reg_tokens,
                                                                  no_embed_class):
    """The import path itself: a 37 x 37 checkpoint (148 px of 4 px patches) run at 64 px,
    against the torch replica loaded with timm's resampling of the same tensors."""
    options = dict(layer_scale=True, reg_tokens=reg_tokens, no_embed_class=no_embed_class)
    source = TorchViT(4, 64, 4, 4, 148, **options)
    state = _random_state(source, seed=12)
    assert state["pos_embed"].shape[1] == 37 * 37 + (0 if no_embed_class else 1 + reg_tokens)
    path = save_safetensors(state, tmp_path / "grid37.safetensors")
    prefix = 0 if no_embed_class else 1 + reg_tokens
    resampled = dict(state, pos_embed=_torch_resample(state["pos_embed"], (16, 16), prefix))
    reference = TorchViT(4, 64, 4, 4, 64, **options).eval()
    reference.load_state_dict(resampled, strict=True)
    images = sample_photos(64)
    _, want_pooled = _theirs(reference, images)
    _, pooled = backbone_and_pooled(_model_config("token", **options), path, 64, images)
    diff = np.abs(pooled - want_pooled).max()
    print(f"37x37 -> 16x16 (registers {reg_tokens}): pooled max abs difference {diff:.2e}")
    assert diff < 1e-4


@needs_torch
@pytest.mark.parametrize("reg_tokens", [0, 4])
def test_fc_norm_pooling_matches_torch(tmp_path, reg_tokens):
    """timm's global_pool='avg' checkpoints: no final norm, the patch tokens' mean (class and
    register tokens left out), then fc_norm."""
    options = dict(layer_scale=True, reg_tokens=reg_tokens, no_embed_class=bool(reg_tokens))
    reference = TorchViT(4, 64, 4, 4, 32, global_pool="avg", fc_norm=True, **options).eval()
    state = _random_state(reference, seed=13)
    reference.load_state_dict(state, strict=True)
    assert "fc_norm.weight" in state and "norm.weight" not in state
    path = save_safetensors(state, tmp_path / "fc_norm.safetensors")
    images = sample_photos(32)
    _, want_pooled = _theirs(reference, images)
    backbone, pooled = backbone_and_pooled(_model_config("fc_norm", **options), path, 32, images)
    assert backbone.shape == (2, 64)
    diff = np.abs(pooled - want_pooled).max()
    print(f"fc_norm (registers {reg_tokens}): pooled max abs difference {diff:.2e}")
    assert want_pooled.std() > 0.1 and diff < 1e-4


@needs_torch
@pytest.mark.parametrize("pooling", ["token", "avg"])
def test_clip_projection_is_the_pooled_feature_and_matches_torch(tmp_path, pooling):
    """OpenAI CLIP as timm imports it: pre-norm, quick GELU, eps 1e-5 and the projection as
    `head` (weight [out, D], bias zero)."""
    options = dict(pre_norm=True, act="quick_gelu", eps=1e-5)
    reference = TorchViT(4, 64, 4, 4, 32, global_pool=pooling, projection=24, **options).eval()
    state = random_state_dict(reference, seed=15)
    state["head.bias"] = torch.zeros(24)
    reference.load_state_dict(state, strict=True)
    path = save_safetensors(state, tmp_path / "clip.safetensors")
    images = sample_photos(32)
    _, want_pooled = _theirs(reference, images)
    config = _model_config(pooling, pre_norm=True, act="quick_gelu", norm_eps=1e-5,
                           projection=24)
    backbone, pooled = backbone_and_pooled(config, path, 32, images)
    assert backbone.shape == pooled.shape == (2, 24)
    diff = np.abs(pooled - want_pooled).max()
    print(f"CLIP projection ({pooling}): pooled max abs difference {diff:.2e}")
    assert want_pooled.std() > 0.1 and diff < 1e-4
    # Without the option the head is ignored, as before: the 64-d pooled token.
    _, unprojected = backbone_and_pooled(_model_config(pooling, pre_norm=True, act="quick_gelu",
                                         norm_eps=1e-5), path, 32, images)
    assert unprojected.shape == (2, 64)


@needs_torch
@pytest.mark.parametrize("torch_options, config_options, hint", [
    (dict(layer_scale=True), {}, "set model.vit.layer_scale=True"),
    ({}, dict(layer_scale=True), "set model.vit.layer_scale=False"),
    (dict(reg_tokens=4, no_embed_class=True), {}, "set model.vit.reg_tokens"),
    (dict(global_pool="avg", fc_norm=True), {}, "set model.pooling=fc_norm"),
    ({}, dict(projection=24), "set model.vit.projection=0"),
])
def test_variant_keys_that_do_not_fit_name_the_option(tmp_path, torch_options, config_options,
                                                      hint):
    state = random_state_dict(TorchViT(4, 64, 4, 4, 32, **torch_options), seed=14)
    path = save_safetensors(state, tmp_path / "w.safetensors")
    config = _model_config(**config_options)
    config.name, config.pretrained = "vit_micro", path
    with pytest.raises(pretrained.WeightImportError, match=hint):
        initial_variables(make_embedder(config), config, 1, jax.random.key(0), 32)


def test_older_configs_without_the_variant_keys_build_the_plain_layout():
    config = _model_config()
    assert "layer_scale" not in config.vit
    filled = defaults.filled(config, "model").vit
    assert (filled.layer_scale, filled.reg_tokens, filled.no_embed_class) == (False, 0, False)
    params = jax.eval_shape(lambda: initial_variables(make_embedder(config), config, 1,
                                                      jax.random.key(0), 32))[0]["backbone"]
    assert "reg_token" not in params and "ls1" not in params["blocks_0"]
    assert params["pos_embed"].shape == (1, 1 + 64, 64)
    assert defaults.filled(config, "model").vit.projection == 0
    for key in ("reg_tokens", "projection"):
        for bad in (-1, 1.5, True):
            with pytest.raises(vit.ConfigError, match=f"model.vit.{key}"):
                check_model_config(_model_config(**{key: bad}))
