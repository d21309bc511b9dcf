"""Weight import: torchvision-layout state dicts run in our Flax ResNet exactly as in torch.

The reference is a ResNet written here with torch.nn in torchvision's layout (v1.5, the same
module names), because torchvision's wheel cannot be installed beside the CPU torch wheel this
project tests with. When torch is absent these tests are skipped and say why.
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

torch = pytest.importorskip("torch", reason="torch (CPU) is needed for the parity reference; "
                            "`make test` installs it from requirements-test.txt")
nn = torch.nn


class _TorchBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride here
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return torch.relu(self.bn3(self.conv3(y)) + idt)


class _TorchBasic(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + idt)


class _TorchResNet(nn.Module):
    """torchvision.models.resnet.ResNet's layout, returning the average-pooled features."""

    def __init__(self, block, layers, expansion, width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, 2 if i > 0 and j == 0 else 1))
                inplanes = planes * expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, 1000)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))


def _randomised(model, seed):
    """Random weights and random BN statistics, scaled so 16 blocks keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                last = name.endswith(("bn3", "bn2")) and "layer" in name
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * (0.3 if last else 1.0)
                               + 0.2)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _model_config(name, width=64):
    return ml_collections.ConfigDict(dict(
        name=name, width=width, stem="imagenet", bn_frozen=True, pooling="avg", dropout=0.01,
        embedding_dim=16, head_init="pt_default", pretrained=""))


def _save_safetensors(model, path):
    from safetensors.numpy import save_file

    save_file({k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, path)


@pytest.mark.parametrize("name, reference", [
    ("resnet50", lambda: _TorchResNet(_TorchBottleneck, [3, 4, 6, 3], 4)),
    ("resnet18", lambda: _TorchResNet(_TorchBasic, [2, 2, 2, 2], 1)),
])
def test_imported_weights_match_torch(tmp_path, name, reference):
    torch_model = _randomised(reference(), seed=0)
    path = str(tmp_path / f"{name}.safetensors")
    _save_safetensors(torch_model, path)

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


def test_npz_and_pth_read_like_safetensors(tmp_path):
    torch_model = _randomised(_TorchResNet(_TorchBasic, [1, 1, 1, 1], 1, width=8), seed=1)
    state = {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}
    np.savez(tmp_path / "w.npz", **state)
    torch.save({"state_dict": {f"module.{k}": v for k, v in torch_model.state_dict().items()}},
               tmp_path / "w.pth")
    _save_safetensors(torch_model, str(tmp_path / "w.safetensors"))
    loaded = [pretrained.read_state_dict(str(tmp_path / f)) for f in
              ("w.safetensors", "w.npz", "w.pth")]
    for other in loaded[1:]:
        assert other.keys() == loaded[0].keys()
        for k in other:
            np.testing.assert_array_equal(other[k], loaded[0][k])


def test_unknown_missing_and_misshaped_keys_are_listed(tmp_path):
    torch_model = _TorchResNet(_TorchBasic, [1, 1, 1, 1], 1, width=8)
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

    assert default.get_config().model.pretrained == pretrained.DEFAULT_HUB_ID
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # tests never reach the hub
