"""Weight import: torchvision-layout state dicts run in our Flax ResNet exactly as in torch.

The reference is a ResNet written with torch.nn in torchvision's layout (tests/torch_resnet.py,
v1.5, the same module names), because torchvision's wheel cannot be installed beside the CPU
torch wheel this project tests with. Without torch the tests that compare with it are skipped
and say why (a failure under CI=true: tests/skip_guard.py); the others run.
"""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dnc_jax.models import head as head_lib
from dnc_jax.models import pretrained
from dnc_jax.models.embedder import make_embedder
from dnc_jax.models.variables import initial_variables
from tests.torch_optional import needs_torch, torch

if torch is not None:
    from tests.torch_resnet import (TorchBasic, TorchBottleneck, TorchResNet, randomised,
                                    save_safetensors)


def _model_config(name, width=64):
    return ml_collections.ConfigDict(dict(
        name=name, width=width, stem="imagenet", bn_frozen=True, pooling="avg", dropout=0.01,
        embedding_dim=16, head_init="pt_default", pretrained=""))


@needs_torch
@pytest.mark.parametrize("name, reference", [
    ("resnet50", lambda: TorchResNet(TorchBottleneck, [3, 4, 6, 3], 4)),
    ("resnet18", lambda: TorchResNet(TorchBasic, [2, 2, 2, 2], 1)),
])
def test_imported_weights_match_torch(tmp_path, name, reference):
    torch_model = randomised(reference(), seed=0)
    path = str(tmp_path / f"{name}.safetensors")
    save_safetensors(torch_model, path)

    config = _model_config(name)
    config.pretrained = path
    model = make_embedder(config, jnp.float32)
    params, stats = initial_variables(model, config, 1, jax.random.key(0), 64)

    # Odd, non-square sizes exercise the stride-2 padding of every stage.
    images = np.random.default_rng(0).normal(size=(2, 3, 113, 127)).astype(np.float32)
    with torch.no_grad():
        want = torch_model(torch.from_numpy(images)).numpy()
    got = model.apply({"params": params, "batch_stats": stats},
                      jnp.asarray(images.transpose(0, 2, 3, 1)), train=False)["pooled"]
    assert want.std() > 0.1  # the comparison is not between near-zero vectors
    diff = np.abs(np.asarray(got) - want).max()
    print(f"{name}: max abs difference {diff:.2e}, feature std {want.std():.3f}")
    np.testing.assert_array_less(diff, 1e-4)


@needs_torch
def test_npz_and_pth_read_like_safetensors(tmp_path):
    torch_model = randomised(TorchResNet(TorchBasic, [1, 1, 1, 1], 1, width=8), seed=1)
    state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
    np.savez(tmp_path / "w.npz", **state)
    torch.save({"state_dict": {f"module.{k}": v for k, v in torch_model.state_dict().items()}},
               tmp_path / "w.pth")
    save_safetensors(torch_model, str(tmp_path / "w.safetensors"))
    loaded = [pretrained.read_state_dict(str(tmp_path / f)) for f in
              ("w.safetensors", "w.npz", "w.pth")]
    for other in loaded[1:]:
        assert other.keys() == loaded[0].keys()
        for k in other:
            np.testing.assert_array_equal(other[k], loaded[0][k])


@needs_torch
def test_unknown_missing_and_misshaped_keys_are_listed(tmp_path):
    torch_model = TorchResNet(TorchBasic, [1, 1, 1, 1], 1, width=8)
    state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
    state["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    del state["layer2.0.bn1.running_var"]
    state["conv1.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    config = _model_config("resnet_tiny", width=8)
    model = make_embedder(config, jnp.float32)
    params, stats = initial_variables(model, config, 1, jax.random.key(0), 32)
    with pytest.raises(pretrained.WeightImportError) as err:
        pretrained.load_backbone(state, params["backbone"], stats["backbone"])
    message = str(err.value)
    assert "unknown keys ['layer9.0.conv1.weight']" in message
    assert "missing keys ['layer2.0.bn1.running_var']" in message
    assert "conv1.weight: file (8, 3, 5, 5), model expects (8, 3, 7, 7)" in message


def test_a_long_key_listing_is_cut_with_its_count():
    """A checkpoint of another depth misses hundreds of keys: the first few and the count."""
    wanted = {f"blocks.{i}.w": ((f"blocks_{i}", "kernel"), (2,)) for i in range(40)}
    state = {f"blocks.{i}.w": np.zeros(2, np.float32) for i in range(2)}
    with pytest.raises(pretrained.WeightImportError) as err:
        pretrained.map_tensors(state, wanted, set(state), lambda k, v, p, s: v,
                               lambda shape, path: shape)
    message = str(err.value)
    assert "missing keys ['blocks.10.w', 'blocks.11.w'," in message  # sorted as text
    assert "... (38 in all)]" in message and "blocks.9.w" not in message
    assert len(message) < 300


def test_offline_hub_id_without_cache_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path), raising=False)
    with pytest.raises(pretrained.WeightImportError) as err:
        pretrained.read_state_dict("someone/resnet50-weights")
    message = str(err.value)
    assert "\n" not in message and "--config.model.pretrained=" in message
    assert "someone/resnet50-weights" in message


def test_cvpr_head_init_draws_each_learner_block_with_its_own_fan_out():
    head = head_lib.init_head(jax.random.key(0), 2048, 128, 8, "cvpr")
    kernel = np.asarray(head["kernel"])
    assert kernel.shape == (2048, 128)
    for k in range(8):
        block = kernel[:, 16 * k:16 * (k + 1)]
        assert block.std() == pytest.approx((2 / (2048 + 16)) ** 0.5, rel=0.03)
    bias = np.asarray(head["bias"])
    assert np.abs(bias).max() <= 1 / 2048 ** 0.5
    default = np.asarray(head_lib.init_head(jax.random.key(0), 2048, 128, 8, "pt_default")["kernel"])
    assert np.abs(default).max() <= 1 / 2048 ** 0.5
    assert default.std() == pytest.approx(1 / 2048 ** 0.5 / 3 ** 0.5, rel=0.03)


def test_default_config_names_the_torchvision_weights():
    from dnc_jax.configs import default

    # torchvision's ImageNet-1k V1 ResNet-50 on the hub, written out, not read from the code.
    assert default.get_config().model.pretrained == "timm/resnet50.tv_in1k"
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never reach the hub


@needs_torch
def test_written_backbone_is_torchs_state_dict_again(tmp_path):
    """`backbone_state_dict` (what `dnc-jax backbone` writes) inverts the import: torch's own
    tensors, key for key and bit for bit, so torch loads it with strict=True (bar fc)."""
    torch_model = randomised(TorchResNet(TorchBasic, [1, 1, 1, 1], 1, width=8), seed=2)
    path = str(tmp_path / "w.safetensors")
    save_safetensors(torch_model, path)
    config = _model_config("resnet_tiny", width=8)
    config.pretrained = path
    model = make_embedder(config, jnp.float32)
    params, stats = initial_variables(model, config, 1, jax.random.key(0), 32)
    written = pretrained.backbone_state_dict(params["backbone"], stats["backbone"])
    want = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert written.keys() == want.keys()
    for key, value in want.items():
        assert written[key].dtype == np.float32 and written[key].flags.c_contiguous
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    fresh = TorchResNet(TorchBasic, [1, 1, 1, 1], 1, width=8)
    result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in written.items()},
                                   strict=False)
    assert set(result.missing_keys) == {"fc.weight", "fc.bias"} and not result.unexpected_keys
