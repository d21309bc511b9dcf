"""ConvNeXt: timm-layout state dicts run in our Flax ConvNeXt as in torch.

The reference is `tests/torch_convnext.py`, a torch.nn replica of timm's ConvNeXt in its key
layout (timm needs torchvision, which cannot be installed beside the CPU torch wheel here). The
inputs are scikit-learn's sample photographs, center-cropped and normalised with ImageNet's
mean/std, what the facebook ConvNeXt checkpoints expect.
"""
import time

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dnc_jax import defaults
from dnc_jax.errors import ConfigError
from dnc_jax.losses.contrastive import contrastive_loss
from dnc_jax.models import convnext, convnext_import, pretrained
from dnc_jax.models.embedder import check_model_config, make_embedder
from dnc_jax.models.variables import initial_variables
from dnc_jax.normalize import l2_normalize
from tests.backbone_parity import sample_photos, save_safetensors
from tests.torch_optional import needs_torch, torch

if torch is not None:
    from tests.torch_convnext import TorchConvNeXt, random_state_dict


def _model_config(name, pooling="avg", pretrained_path=""):
    return ml_collections.ConfigDict(dict(
        name=name, width=64, stem="imagenet", bn_frozen=True, pooling=pooling, dropout=0.0,
        embedding_dim=16, head_init="pt_default", pretrained=pretrained_path))


def _pooled(config, side, images):
    model = make_embedder(config, jnp.float32)
    params, stats = initial_variables(model, config, 1, jax.random.key(0), side)
    out = model.apply({"params": params, "batch_stats": stats}, jnp.asarray(images))
    return params, np.asarray(out["pooled"])


def _reference(torch_model, images, pooling="avg"):
    with torch.no_grad():
        return torch_model.pre_logits(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                                      pooling).numpy()


@needs_torch
@pytest.mark.parametrize("name, side", [("convnext_micro", 64), ("convnext_tiny", 96)])
def test_convnext_imports_timm_weights_and_matches_torch(tmp_path, name, side):
    arch = convnext.architecture(name)
    reference = TorchConvNeXt(arch.depths, arch.dims).eval()
    state = random_state_dict(reference, seed=0)
    reference.load_state_dict(state, strict=True)
    state["head.fc.weight"] = torch.zeros(1000, arch.dims[-1])  # the classifier: not imported
    state["head.fc.bias"] = torch.zeros(1000)
    path = save_safetensors(state, tmp_path / f"{name}.safetensors")
    images = sample_photos(side)

    start = time.perf_counter()
    if name == "convnext_micro":  # the whole path: config, embedder, initial_variables
        params, pooled = _pooled(_model_config(name, "avg", path), side, images)
    else:  # the import alone into abstract parameters, one compiled forward (CPU time)
        model = convnext.make_convnext(name)
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, side, side,
                                                                               3))))
        backbone = convnext_import.load_convnext_backbone(
            pretrained.read_state_dict(path), shapes["params"])
        pooled = np.asarray(jax.jit(model.apply)({"params": backbone}, jnp.asarray(images)))
    want = _reference(reference, images)
    assert pooled.shape == (2, arch.dims[-1])
    assert want.std() > 0.1  # the comparison is not between near-zero vectors
    diff = np.abs(pooled - want).max()
    print(f"{name} {side} px: max abs pooled difference {diff:.2e}, std {want.std():.3f} "
          f"({time.perf_counter() - start:.1f} s)")
    assert diff < 1e-4
    # The photographs differ: the features are not a constant of the weights.
    assert np.abs(want[0] - want[1]).max() > 0.1
    if name == "convnext_micro":
        _, pooled_max = _pooled(_model_config(name, "max", path), side, images)
        assert np.abs(pooled_max - _reference(reference, images, "max")).max() < 1e-4
        # Written back in timm's layout, the tensors are the file's.
        back = convnext_import.backbone_state_dict(params["backbone"])
        assert sorted(back) == sorted(k for k in state if not k.startswith("head.fc."))
        for key, value in back.items():
            np.testing.assert_array_equal(value, state[key].numpy())


@needs_torch
def test_keys_that_do_not_fit_are_listed(tmp_path):
    state = random_state_dict(TorchConvNeXt((1, 1, 1, 1), (16, 32, 64, 128)), seed=3)
    state["stages.0.blocks.0.mlp.grn.weight"] = torch.ones(64)
    del state["stages.3.blocks.0.mlp.fc2.bias"]
    state["stages.1.downsample.1.weight"] = torch.zeros(32, 16, 3, 3)
    path = save_safetensors(state, tmp_path / "bad.safetensors")
    config = _model_config("convnext_micro", pretrained_path=path)
    with pytest.raises(pretrained.WeightImportError) as err:
        initial_variables(make_embedder(config), config, 1, jax.random.key(0), 32)
    message = str(err.value)
    assert "\n" not in message
    assert "unknown keys ['stages.0.blocks.0.mlp.grn.weight']" in message
    assert "missing keys ['stages.3.blocks.0.mlp.fc2.bias']" in message
    assert ("stages.1.downsample.1.weight: file (32, 16, 3, 3), model expects (32, 16, 2, 2)"
            in message)
    assert "global response norm" in message


def test_timm_names_of_the_flax_tree():
    model = convnext.make_convnext("convnext_micro")
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    keys = {convnext_import.timm_key(p) for p in
            flax.traverse_util.flatten_dict(params["params"])}
    assert {"stem.0.weight", "stem.1.weight", "stages.0.blocks.0.conv_dw.weight",
            "stages.0.blocks.0.gamma", "stages.2.downsample.0.bias",
            "stages.2.downsample.1.weight", "stages.3.blocks.0.mlp.fc1.weight",
            "head.norm.weight", "head.norm.bias"} <= keys
    assert not any(k.startswith("stages.0.downsample") for k in keys)
    # timm 1.0.31's parameter counts with the 1000-class classifier `head.fc` (C * 1000 + 1000).
    for name, timm_count in [("convnext_tiny", 28_589_128), ("convnext_small", 50_223_688),
                             ("convnext_base", 88_591_464)]:
        model = convnext.make_convnext(name)
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
        count = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
        assert count + model.arch.dims[-1] * 1000 + 1000 == timm_count, name


def test_config_errors_name_their_key():
    with pytest.raises(ConfigError, match="model.name 'convnext_huge'"):
        check_model_config(_model_config("convnext_huge"))
    with pytest.raises(ConfigError, match="model.pooling"):
        check_model_config(_model_config("convnext_micro", "token"))
    with pytest.raises(ConfigError, match="augment.image_size 16 is smaller"):
        check_model_config(_model_config("convnext_micro"), image_size=16)
    check_model_config(_model_config("convnext_tiny", "max"), image_size=32)
    assert convnext.architecture("convnext_base").dims == (128, 256, 512, 1024)
    assert convnext.architecture("convnext_small").depths == (3, 3, 27, 3)


def test_bfloat16_compute_keeps_float32_parameters_and_features():
    config = _model_config("convnext_micro")
    model = make_embedder(config, jnp.bfloat16)
    params, stats = initial_variables(model, config, 1, jax.random.key(0), 32)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    images = jnp.asarray(sample_photos(32))
    out = model.apply({"params": params, "batch_stats": stats}, images)
    assert out["pooled"].dtype == jnp.float32 and out["embedding"].dtype == jnp.float32
    exact = make_embedder(config, jnp.float32).apply({"params": params, "batch_stats": stats},
                                                     images)["pooled"]
    assert np.abs(np.asarray(out["pooled"]) - np.asarray(exact)).max() < 0.1


def test_convnext_micro_trains_from_scratch():
    """A few Adam steps of a contrastive loss on two classes of crops of the photographs: the
    loss falls, gradients reach every backbone tensor, drop path is active in training only."""
    config = _model_config("convnext_micro")
    model = convnext.make_convnext("convnext_micro", drop_path=0.1)
    embedder = make_embedder(config).clone(backbone=model)
    params, _ = initial_variables(embedder, config, 1, jax.random.key(0), 32)
    photos = sample_photos(48)
    rng = np.random.default_rng(0)
    crops, labels = [], []
    for label in range(2):
        for _ in range(4):
            top, left = rng.integers(0, 16, 2)
            crops.append(photos[label, top:top + 32, left:left + 32])
            labels.append(label)
    images, labels = jnp.asarray(np.stack(crops)), jnp.asarray(labels)
    learners, valid = jnp.zeros_like(labels), jnp.ones_like(labels, dtype=bool)

    def loss_fn(p, key):
        out = embedder.apply({"params": p}, images, train=True, rngs={"dropout": key})
        loss, _ = contrastive_loss(l2_normalize(out["embedding"]), labels, learners, valid,
                                   None, num_learners_max=1, neg_margin=1.2)
        return loss

    tx = optax.adam(3e-3)
    state = tx.init(params)

    @jax.jit
    def step(p, s, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, key)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, grads

    losses = []
    for i in range(8):
        params, state, loss, grads = step(params, state, jax.random.key(i))
        losses.append(float(loss))
        if i == 0:
            assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["backbone"]))
    print("convnext_micro losses", [f"{x:.3f}" for x in losses])
    assert losses[-1] < 0.7 * losses[0]
    a, b = (embedder.apply({"params": params}, images, train=True,
                           rngs={"dropout": jax.random.key(s)})["pooled"] for s in range(2))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
    c, d = (embedder.apply({"params": params}, images)["pooled"] for _ in range(2))
    np.testing.assert_array_equal(c, d)


def test_convnext_backbone_converts_to_onnx():
    """jax2onnx converts the ConvNeXt (depthwise conv, LayerNorms, exact GELU, layer scale, the
    pooled norm) and onnxruntime computes what JAX does; `dnc_jax.export` adds the head and the
    preprocessing around it as for the other backbones."""
    import logging

    import onnxruntime as ort
    from jax2onnx import to_onnx

    model = convnext.make_convnext("convnext_micro")
    images = sample_photos(32)
    variables = model.init(jax.random.key(0), jnp.asarray(images))
    # Layer scales of 0.3, not 1e-6, so that every block shows in the output.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.3 if path[-1].key == "gamma" else x, variables)

    def fn(x):
        return model.apply(variables, x)

    plugin_log = logging.getLogger("jax2onnx.plugins.plugin_system")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        proto = to_onnx(fn, [jax.ShapeDtypeStruct(images.shape, jnp.float32)],
                        model_name="convnext_micro")
    finally:
        plugin_log.setLevel(level)
    del proto.graph.value_info[:]  # as dnc_jax.export: leave shape inference to the runtime
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    want = np.asarray(fn(jnp.asarray(images)))
    assert want.std() > 0.1
    assert np.abs(got - want).max() < 1e-4


# -- stochastic depth (`model.convnext.drop_path`) -------------------------------------------

def _block_rates(model, side=32):
    """{(stage, block): the drop path rate the Block is built with}, read while tracing
    `model.init` (abstractly: no arrays are computed)."""
    rates = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, convnext.Block) and context.method_name == "__call__":
            stage, block = module.path[-2:]
            rates[int(stage.split("_")[1]), int(block.split("_")[1])] = module.drop_path
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, side, side, 3))))
    return rates


@pytest.mark.parametrize("name", ["convnext_micro", "convnext_tiny"])
def test_drop_path_rate_per_block_is_timms(name):
    rate = 0.3
    depths = convnext.architecture(name).depths
    got = _block_rates(convnext.make_convnext(name, drop_path=rate))
    assert sorted(got) == [(s, b) for s, d in enumerate(depths) for b in range(d)]
    # timm's ConvNeXt: `calculate_drop_path_rates(drop_path_rate, depths, stagewise=True)`, i.e.
    # torch.linspace(0, rate, sum(depths)).split(depths): linear in the block's index over all
    # stages, 0 for the first block and `rate` for the last.
    total = sum(depths)
    index = {key: i for i, key in enumerate(sorted(got))}
    for key, value in got.items():
        assert value == pytest.approx(rate * index[key] / (total - 1), abs=1e-12), key
    if name == "convnext_micro":  # four blocks by hand: 0, rate/3, 2 rate/3, rate
        assert [got[s, 0] for s in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    if torch is not None:  # timm's own expression (float32 linspace, as timm computes it)
        timm_rates = [x.tolist() for x in torch.linspace(0, rate, total).split(list(depths))]
        for (s, b), value in got.items():
            assert value == pytest.approx(timm_rates[s][b], abs=1e-7), (s, b)
    assert set(_block_rates(convnext.make_convnext(name)).values()) == {0.0}


def test_drop_path_is_active_in_training_only():
    images = jnp.asarray(sample_photos(32))
    model = convnext.make_convnext("convnext_micro", drop_path=0.5)
    variables = model.init(jax.random.key(0), images)
    # Layer scales of 0.3, not 1e-6, so that every block's branch shows in the output.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.3 if path[-1].key == "gamma" else x, variables)
    inference = np.asarray(model.apply(variables, images))
    for key in range(2):  # an rng given outside training changes nothing
        np.testing.assert_array_equal(
            model.apply(variables, images, train=False, rngs={"dropout": jax.random.key(key)}),
            inference)
    trained = [np.asarray(model.apply(variables, images, train=True,
                                      rngs={"dropout": jax.random.key(key)}))
               for key in range(4)]
    for out in trained:  # dropped branches, or kept ones scaled by 1 / (1 - rate)
        assert np.abs(out - inference).max() > 1e-3
    assert max(np.abs(a - trained[0]).max() for a in trained[1:]) > 1e-3  # the rng matters
    # Without stochastic depth, training mode computes what inference does.
    plain = convnext.make_convnext("convnext_micro")
    np.testing.assert_array_equal(
        plain.apply(variables, images, train=True, rngs={"dropout": jax.random.key(0)}),
        inference)


def test_run_config_drop_path_reaches_the_network():
    config = defaults.get_config()
    config.model.update(name="convnext_micro", pretrained="")
    config.model.convnext.drop_path = 0.25
    check_model_config(config.model, image_size=32)
    embedder = make_embedder(config.model)
    assert embedder.backbone.drop_path == 0.25
    rates = _block_rates(embedder)
    assert max(rates.values()) == rates[3, 0] == 0.25 and rates[0, 0] == 0.0
    # A model config from before the key: no stochastic depth.
    assert make_embedder(_model_config("convnext_micro")).backbone.drop_path == 0.0


@pytest.mark.parametrize("value, message", [
    (1.0, r"model.convnext.drop_path must be in \[0, 1\), got 1.0"),
    (-0.1, r"model.convnext.drop_path must be in \[0, 1\), got -0.1"),
    (float("nan"), r"model.convnext.drop_path must be in \[0, 1\), got nan"),
    ("0.1", r"model.convnext.drop_path must be a number in \[0, 1\), got '0.1' \(str\)"),
    (None, r"model.convnext.drop_path must be a number in \[0, 1\), got None \(NoneType\)"),
    (True, r"model.convnext.drop_path must be a number in \[0, 1\), got True \(bool\)"),
])
def test_bad_drop_path_names_the_config_key(value, message):
    model_config = _model_config("convnext_micro")
    model_config.convnext = ml_collections.ConfigDict({"drop_path": value})
    for build in (lambda: check_model_config(model_config),
                  lambda: make_embedder(model_config),
                  lambda: convnext.make_convnext("convnext_micro", drop_path=value)):
        with pytest.raises(ConfigError, match=message) as error:
            build()
        assert "\n" not in str(error.value)
