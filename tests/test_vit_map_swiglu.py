"""timm ViT layouts of SigLIP's image tower and DINOv2's giant: no class token, attention
pooling by a learned query (`attn_pool`, model.pooling='map'), the tanh GELU, and the
SwiGLUPacked block MLP (`mlp.fc1` packing value and gate, act SiLU).

The reference is `tests/torch_vit.py`, a torch replica of timm's VisionTransformer,
AttentionPoolLatent and GluMlp written from their definitions (bench/timm_replica_check.py
checks the replica against timm itself); tiny 32 px models on scikit-learn's photographs.
"""
import jax
import numpy as np
import pytest

from dnc_jax.models import pretrained, vit
from dnc_jax.models.embedder import check_model_config, make_embedder
from dnc_jax.models.variables import initial_variables
from tests.backbone_parity import (backbone_and_pooled, sample_photos, save_safetensors,
                                   vit_micro_config)
from tests.torch_optional import needs_torch, torch

if torch is not None:
    from tests.torch_vit import TorchViT, random_state_dict


_model_config = vit_micro_config


def _pooled_of_torch(reference, images):
    with torch.no_grad():
        tokens = reference.forward_features(
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
        return reference.forward_head(tokens).numpy()


def _compare(tmp_path, reference, config, seed, what, normalization="imagenet"):
    state = random_state_dict(reference, seed)
    if "blocks.0.ls1.gamma" in state:  # gammas around 0.5, so that a lost one shows
        gen = torch.Generator().manual_seed(seed + 100)
        for key in [k for k in state if k.endswith(".gamma")]:
            state[key] = 0.5 + 0.3 * torch.randn(state[key].shape, generator=gen)
    reference.load_state_dict(state, strict=True)
    path = save_safetensors(state, tmp_path / f"{what}.safetensors")
    images = sample_photos(32, normalization)
    want = _pooled_of_torch(reference.eval(), images)
    backbone, pooled = backbone_and_pooled(config, path, 32, images)
    diff = np.abs(pooled - want).max()
    print(f"{what}: pooled max abs difference {diff:.2e} (feature std {want.std():.2f})")
    assert pooled.shape == want.shape
    if config.pooling != "token":  # the backbone pools itself
        assert backbone.shape == want.shape
    assert want.std() > 0.1 and diff < 1e-4
    return state


@needs_torch
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_siglip_tower_without_class_token_pools_by_attention_as_torch(tmp_path, act):
    """timm's vit_*_siglip_*: class_token=False, global_pool='map' (the final norm, then
    AttentionPoolLatent over every token), position embeddings for the patches alone."""
    reference = TorchViT(4, 64, 4, 4, 32, act=act, class_token=False, global_pool="map")
    config = _model_config("map", class_token=False, act=act)
    state = _compare(tmp_path, reference, config, 21, f"SigLIP ({act})", "inception")
    assert "cls_token" not in state and state["pos_embed"].shape == (1, 64, 64)
    assert state["attn_pool.kv.weight"].shape == (128, 64)


@needs_torch
def test_attention_pooling_leaves_the_class_and_register_tokens_out(tmp_path):
    """With a class token and registers, the MAP head attends over the patch tokens only
    (timm's pool_include_prefix=False)."""
    options = dict(reg_tokens=4, no_embed_class=True, layer_scale=True)
    reference = TorchViT(4, 64, 4, 4, 32, global_pool="map", **options)
    _compare(tmp_path, reference, _model_config("map", **options), 22, "MAP with registers")


@needs_torch
def test_siglip_gap_variant_averages_the_tokens_without_a_class_token(tmp_path):
    """timm's vit_*_siglip_gap_*: no class token, global_pool='avg', fc_norm=False: the final
    norm, then the mean of every token; the backbone pools it (nothing else to take)."""
    reference = TorchViT(4, 64, 4, 4, 32, class_token=False, global_pool="avg")
    _compare(tmp_path, reference, _model_config("avg", class_token=False), 23, "SigLIP GAP")


@needs_torch
@pytest.mark.parametrize("mlp_hidden", [0, 96])
def test_swiglu_packed_mlp_matches_torch(tmp_path, mlp_hidden):
    """DINOv2 giant's blocks: LayerScale and timm's SwiGLUPacked (act(a) * b of fc1's two
    halves, act SiLU); by default fc1 is DINOv2's 2 x round8(8/3 x 64) = 352 wide."""
    width = mlp_hidden or 352
    reference = TorchViT(4, 64, 4, 4, 32, act="silu", layer_scale=True, mlp="swiglu",
                         mlp_hidden=width)
    config = _model_config("token", act="silu", layer_scale=True, mlp="swiglu",
                           mlp_hidden=mlp_hidden)
    state = _compare(tmp_path, reference, config, 24, f"SwiGLU fc1 {width}")
    assert state["blocks.0.mlp.fc2.weight"].shape == (64, width // 2)


def test_swiglu_width_follows_timms_dinov2_giant():
    """timm builds vit_giant_patch14_dinov2 with mlp_ratio=2.66667 * 2 (fc1 8192 wide for
    D = 1536, its comment's (int(4D * 2/3) + 7) // 8 * 8 times two halves)."""
    giant = vit.architecture("vit_g14")
    assert (giant.width, giant.depth, giant.num_heads) == (1536, 40, 24)
    assert vit.mlp_hidden(giant, "swiglu") == int(1536 * 2.66667 * 2) == 8192
    assert vit.mlp_hidden(giant, "plain") == 4 * 1536
    so400m = vit.architecture("vit_so400m14")  # timm's vit_so400m_patch14_siglip_*
    assert (so400m.width, so400m.depth, so400m.num_heads) == (1152, 27, 16)
    assert vit.mlp_hidden(so400m, "plain") == int(1152 * 3.7362) == 4304


@needs_torch
@pytest.mark.parametrize("torch_options, config_options, hints", [
    (dict(class_token=False, global_pool="map"), {},
     ["set model.vit.class_token=False", "set model.pooling=map"]),
    ({}, dict(class_token=False, pooling="map"),
     ["set model.vit.class_token=True", "set model.pooling to token"]),
    (dict(mlp="swiglu", mlp_hidden=352, act="silu"), {},
     ["set model.vit.mlp=swiglu and model.vit.mlp_hidden=352", "model.vit.act=silu"]),
    ({}, dict(mlp="swiglu"), ["set model.vit.mlp=plain and model.vit.mlp_hidden=256"]),
])
def test_layouts_that_do_not_fit_name_the_option(tmp_path, torch_options, config_options,
                                                 hints):
    state = random_state_dict(TorchViT(4, 64, 4, 4, 32, **torch_options), seed=25)
    path = save_safetensors(state, tmp_path / "w.safetensors")
    config = _model_config(config_options.pop("pooling", "token"), **config_options)
    config.pretrained = path
    with pytest.raises(pretrained.WeightImportError) as error:
        initial_variables(make_embedder(config), config, 1, jax.random.key(0), 32)
    for hint in hints:
        assert hint in str(error.value)


@pytest.mark.parametrize("options, key", [
    (dict(pooling="token", class_token=False), "model.pooling='token' needs a class token"),
    (dict(pooling="map", mlp="geglu"), "model.vit.mlp"),
    (dict(pooling="map", mlp="swiglu", mlp_hidden=33), "model.vit.mlp_hidden must be even"),
    (dict(pooling="map", mlp_hidden=-1), "model.vit.mlp_hidden"),
    (dict(pooling="map", class_token="no"), "model.vit.class_token"),
    (dict(pooling="gem"), "model.pooling"),
    (dict(pooling="map", act="relu"), "model.vit.act"),
])
def test_config_errors_name_their_key(options, key):
    config = _model_config(options.pop("pooling"), **options)
    with pytest.raises(vit.ConfigError, match=key):
        check_model_config(config)


def test_the_map_head_and_swiglu_train_in_bfloat16_with_float32_parameters():
    config = _model_config("map", class_token=False, mlp="swiglu", act="silu")
    model = make_embedder(config, jax.numpy.bfloat16)
    params, _ = initial_variables(model, config, 1, jax.random.key(0), 16)
    leaves = jax.tree_util.tree_leaves(params)
    assert all(leaf.dtype == np.float32 for leaf in leaves)
    assert params["backbone"]["attn_pool"]["latent"].shape == (1, 1, 64)
    out = model.apply({"params": params}, np.ones((2, 16, 16, 3), np.float32), train=True,
                      rngs={"dropout": jax.random.key(1)})
    assert out["features"].dtype == np.float32 and out["features"].shape == (2, 64)
    assert np.isfinite(np.asarray(out["embedding"])).all()


@pytest.mark.parametrize("options", [
    dict(pooling="map", class_token=False, act="gelu_tanh"),
    dict(pooling="token", mlp="swiglu", act="silu", layer_scale=True, reg_tokens=4,
         no_embed_class=True),
    dict(pooling="avg", pre_norm=True, norm_eps=1e-5, projection=24),
])
def test_backbone_written_in_timms_layout_reads_back_bit_for_bit(tmp_path, options):
    """What `dnc-jax backbone` writes for a ViT (vit_import.backbone_state_dict) is read back
    by `model.pretrained` into the same parameters: every key has its timm name and layout."""
    from safetensors.numpy import save_file

    from dnc_jax.models import vit_import

    config = _model_config(options.pop("pooling"), **options)
    model = make_embedder(config)
    params, _ = initial_variables(model, config, 1, jax.random.key(3), 16)
    tensors = vit_import.backbone_state_dict(params["backbone"])
    assert not any("/" in key or "blocks_" in key for key in tensors)
    assert tensors["blocks.0.attn.qkv.weight"].shape == (3 * 64, 64)  # torch's [out, in]
    save_file(tensors, str(tmp_path / "b.safetensors"))
    config.pretrained = str(tmp_path / "b.safetensors")
    again, _ = initial_variables(model, config, 1, jax.random.key(4), 16)
    want = jax.tree_util.tree_leaves_with_path(params["backbone"])
    got = dict(jax.tree_util.tree_leaves_with_path(again["backbone"]))
    assert len(want) == len(got) > 20
    for key, value in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(value))
