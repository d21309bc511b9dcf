"""Vision Transformers: timm-layout state dicts run in our Flax ViT as in torch.

The reference is `tests/torch_vit.py`, a torch.nn replica of timm's VisionTransformer in its key
layout (timm needs torchvision, which cannot be installed beside the CPU torch wheel here). The
inputs are scikit-learn's sample photographs, center-cropped and normalised.
"""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnc_jax.errors import ConfigError
from dnc_jax.models import pretrained, vit, vit_import
from dnc_jax.models.embedder import check_model_config, make_embedder, pool
from dnc_jax.models.variables import initial_variables
from tests.backbone_parity import backbone_and_pooled, sample_photos, save_safetensors
from tests.torch_optional import needs_torch, torch

if torch is not None:
    from tests.torch_vit import TorchViT, random_state_dict


def _model_config(name, pooling="token", **vit_options):
    return ml_collections.ConfigDict(dict(
        name=name, width=64, stem="imagenet", bn_frozen=True, pooling=pooling, dropout=0.0,
        embedding_dim=16, head_init="pt_default", pretrained="",
        vit=dict(dict(pre_norm=False, act="gelu", norm_eps=1e-6, drop_path=0.0), **vit_options)))


def _reference(torch_model, images):
    with torch.no_grad():
        return torch_model.forward_features(
            torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


@needs_torch
def test_vit_s16_imports_timm_weights_and_matches_torch(tmp_path):
    reference = TorchViT(16, 384, 12, 6, 224).eval()
    state = random_state_dict(reference, seed=0)
    reference.load_state_dict(state, strict=True)
    state["head.weight"] = torch.zeros(1000, 384)  # the classifier is not imported
    path = save_safetensors(state, tmp_path / "vit_s16.safetensors")
    images = sample_photos(224)

    want = _reference(reference, images)
    tokens, pooled = backbone_and_pooled(_model_config("vit_s16", "token"), path, 224, images)
    assert want.std() > 0.1  # the comparison is not between near-zero vectors
    diff = np.abs(tokens - want).max()
    print(f"vit_s16 224 px: max abs token difference {diff:.2e}, std {want.std():.3f}")
    assert diff < 1e-4
    assert np.abs(pooled - want[:, 0]).max() < 1e-4
    _, pooled_avg = backbone_and_pooled(_model_config("vit_s16", "avg"), path, 224, images)
    assert np.abs(pooled_avg - want[:, 1:].mean(1)).max() < 1e-4


@needs_torch
def test_position_embeddings_are_resampled_to_another_crop_as_timm_does(tmp_path):
    """A 224 px checkpoint run at 160 px: the 14 x 14 grid resampled to 10 x 10 with torch's
    antialiased bicubic (timm's resample_abs_pos_embed), the class token's row kept."""
    source = TorchViT(16, 384, 12, 6, 224)
    state = random_state_dict(source, seed=1)
    path = save_safetensors(state, tmp_path / "vit_s16_224.safetensors")
    patches = state["pos_embed"][:, 1:].reshape(1, 14, 14, 384).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(patches, size=(10, 10), mode="bicubic",
                                              antialias=True, align_corners=False)
    resampled = dict(state, pos_embed=torch.cat(
        [state["pos_embed"][:, :1], resized.permute(0, 2, 3, 1).reshape(1, 100, 384)], 1))
    reference = TorchViT(16, 384, 12, 6, 160).eval()
    reference.load_state_dict(resampled, strict=True)
    images = sample_photos(160)

    want = _reference(reference, images)
    tokens, _ = backbone_and_pooled(_model_config("vit_s16"), path, 160, images)
    diff = np.abs(tokens - want).max()
    print(f"vit_s16 224 -> 160 px: max abs token difference {diff:.2e}")
    assert diff < 1e-4


@needs_torch
@pytest.mark.parametrize("grid", [(10, 10), (20, 20), (7, 7), (3, 5), (14, 14)])
def test_resample_weights_are_torchs_antialiased_bicubic(grid):
    pos = np.random.default_rng(0).normal(size=(1, 1 + 14 * 14, 6))
    image = torch.from_numpy(pos[:, 1:].reshape(1, 14, 14, 6).transpose(0, 3, 1, 2).copy())
    want = torch.nn.functional.interpolate(image, size=grid, mode="bicubic", antialias=True,
                                           align_corners=False).numpy()
    got = vit_import.resample_pos_embed(pos, grid)
    np.testing.assert_array_equal(got[:, :1], pos[:, :1])
    got_image = got[0, 1:].reshape(*grid, 6).transpose(2, 0, 1)
    np.testing.assert_allclose(got_image, want[0], atol=1e-10)


@needs_torch
def test_clip_style_options_match_torch(tmp_path):
    """Pre-norm without a patch-embedding bias, quick GELU, LayerNorm eps 1e-5 (OpenAI CLIP)."""
    reference = TorchViT(4, 64, 4, 4, 32, pre_norm=True, act="quick_gelu", eps=1e-5).eval()
    state = random_state_dict(reference, seed=2)
    reference.load_state_dict(state, strict=True)
    path = save_safetensors(state, tmp_path / "clip_micro.safetensors")
    images = sample_photos(32, "clip")
    config = _model_config("vit_micro", pre_norm=True, act="quick_gelu", norm_eps=1e-5)
    tokens, _ = backbone_and_pooled(config, path, 32, images)
    assert np.abs(tokens - _reference(reference, images)).max() < 1e-4


@needs_torch
def test_keys_that_do_not_fit_are_listed_with_a_hint(tmp_path):
    state = random_state_dict(TorchViT(4, 64, 4, 4, 32, pre_norm=True), seed=3)
    state["blocks.0.ls1.gamma"] = torch.ones(64)
    del state["blocks.3.mlp.fc2.bias"]
    state["blocks.1.attn.qkv.weight"] = torch.zeros(96, 64)
    path = save_safetensors(state, tmp_path / "bad.safetensors")
    config = _model_config("vit_micro")
    config.pretrained = path
    with pytest.raises(pretrained.WeightImportError) as err:
        initial_variables(make_embedder(config), config, 1, jax.random.key(0), 32)
    message = str(err.value)
    assert "\n" not in message
    assert "unknown keys ['blocks.0.ls1.gamma', 'norm_pre.bias', 'norm_pre.weight']" in message
    assert "missing keys ['blocks.3.mlp.fc2.bias', 'patch_embed.proj.bias']" in message
    assert "blocks.1.attn.qkv.weight: file (96, 64), model expects (192, 64)" in message
    assert "set model.vit.pre_norm=True" in message and "LayerScale" in message


@needs_torch
def test_normalization_the_checkpoint_expects_is_enforced(tmp_path):
    path = save_safetensors(random_state_dict(TorchViT(4, 64, 1, 4, 32), seed=4), tmp_path / "w.safetensors")
    pretrained.check_normalization(path, "clip")  # no config.json: nothing to check against
    # OpenAI CLIP's constants, as timm's pretrained_cfg writes them.
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    (tmp_path / "config.json").write_text(json.dumps(
        {"architecture": "vit_base_patch16_clip_224", "pretrained_cfg": {"mean": mean, "std": std}}))
    pretrained.check_normalization(path, "clip")
    with pytest.raises(ConfigError) as err:
        pretrained.check_normalization(path, "imagenet")
    assert "augment.normalization=clip" in str(err.value) and "\n" not in str(err.value)


def test_pooling_of_tokens_and_feature_maps():
    tokens = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(pool(jnp.asarray(tokens), "token"), tokens[:, 0])
    np.testing.assert_allclose(pool(jnp.asarray(tokens), "avg"), tokens[:, 1:].mean(1), atol=1e-6)
    np.testing.assert_array_equal(pool(jnp.asarray(tokens), "max"), tokens[:, 1:].max(1))
    fmap = tokens.reshape(2, 5, 3, 1)
    np.testing.assert_allclose(pool(jnp.asarray(fmap), "avg"), fmap.mean((1, 2)), atol=1e-6)
    with pytest.raises(ConfigError, match="model.pooling"):
        pool(jnp.asarray(fmap), "token")


@pytest.mark.parametrize("name, key", [("vit_x16", "model.name"), ("vit_s0", "model.name")])
def test_bad_vit_names_name_the_key(name, key):
    with pytest.raises(ConfigError, match=key):
        check_model_config(_model_config(name))


def test_config_errors_name_their_key():
    with pytest.raises(ConfigError, match="augment.image_size 30 is not a multiple"):
        check_model_config(_model_config("vit_micro"), image_size=30)
    with pytest.raises(ConfigError, match="model.vit.act"):
        check_model_config(_model_config("vit_micro", act="relu"))
    with pytest.raises(ConfigError, match="model.pooling"):
        check_model_config(_model_config("resnet18", "token"))
    assert vit.architecture("vit_b16") == vit.ViTArchitecture(16, 768, 12, 12)


def test_drop_path_drops_whole_residual_branches_in_training_only():
    config = _model_config("vit_micro", drop_path=0.5)
    model = make_embedder(config)
    params, stats = initial_variables(model, config, 1, jax.random.key(0), 32)
    images = jnp.asarray(sample_photos(32))
    variables = {"params": params, "batch_stats": stats}
    eval_a = model.apply(variables, images)["pooled"]
    eval_b = model.apply(variables, images)["pooled"]
    np.testing.assert_array_equal(eval_a, eval_b)
    train = [model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(s)})
             ["pooled"] for s in range(2)]
    assert np.abs(np.asarray(train[0]) - np.asarray(train[1])).max() > 1e-3


def test_vit_demo_trains_from_scratch_above_the_untrained_network(tmp_path):
    """configs/demo_vit.py itself, cut to its first two epochs (the K=1 warm-up): Recall@1 on
    the unseen glyph classes rises well above the untrained network's."""
    from dnc_jax.training import train
    from dnc_jax.configs import demo_vit

    config = demo_vit.get_config()
    config.num_epochs, config.progress = 2, False
    config.data.cache_dir = str(tmp_path / "cache")
    train.train_and_evaluate(config, str(tmp_path / "run"))
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    untrained, last = records[0], records[-1]
    print(f"vit_micro R@1: untrained {untrained['recall@1']:.3f}, after 2 epochs "
          f"{last['recall@1']:.3f}")
    assert last["recall@1"] > 1.3 * untrained["recall@1"]


def test_vit_run_resumes_exactly_and_exports_to_onnx(tmp_path):
    """A run stopped after two epochs resumes to the uninterrupted run's result: the optimiser
    state (AdamW, the warm-up counter inside, clipping around it) round-trips through the
    checkpoint. The trained ViT exports to ONNX, normalisation (CLIP's here) included, and
    onnxruntime gives the embeddings of the trained model."""
    import onnxruntime as ort

    from dnc_jax.inference import export, restore
    from dnc_jax.training import train
    from dnc_jax.configs import demo_vit
    from tests.helpers import tiny_config

    def config(epochs):
        c = tiny_config()
        vit_demo = demo_vit.get_config()
        c.model, c.optim = vit_demo.model, vit_demo.optim
        c.optim.warmup_steps = 15  # still warming up when the run stops
        c.model.embedding_dim = 16
        c.augment.normalization = "clip"
        c.data.cache_dir = str(tmp_path / "cache")
        c.num_epochs = epochs
        return c

    full = train.train_and_evaluate(config(3), str(tmp_path / "full"))
    train.train_and_evaluate(config(2), str(tmp_path / "split"))
    resumed = train.train_and_evaluate(config(3), str(tmp_path / "split"))
    # Bitwise: a resumed run computes what the uninterrupted one did (tests/test_run_safety.py).
    assert resumed["loss"] == full["loss"] and resumed["recall@1"] == full["recall@1"]

    description = export.export_onnx(str(tmp_path / "full"), str(tmp_path / "vit.onnx"))
    assert description["preprocessing"]["mean"] == [0.48145466, 0.4578275, 0.40821073]
    trained = restore.load_trained(str(tmp_path / "full"))
    views = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    want = np.asarray(trained.embed_fn.embed_views(views))
    trained.embed_fn.close()
    session = ort.InferenceSession(str(tmp_path / "vit.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: views})[0]
    assert np.abs(got - want).max() < 1e-4
