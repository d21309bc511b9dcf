"""The transformer fine-tuning options of the optimiser (AdamW, layer decay, warm-up, clipping,
no decay on 1-d parameters), on tiny trees against torch and hand-computed factors."""
import chex
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from dnc_jax import defaults
from dnc_jax.training import optim
from dnc_jax.errors import ConfigError

RATES = {"backbone": 1e-2, "head": 2e-2, "masks": 5e-3}
DECAYS = {"backbone": 0.05, "head": 0.1, "masks": 0.01}
NUM_BLOCKS = 3


def _optim_config(**options):
    config = defaults.get_config().optim
    for group, rate in RATES.items():
        config[group].learning_rate = rate
        config[group].weight_decay = DECAYS[group]
    config.update(options)
    return config


def _params(seed=0):
    """A ViT-shaped backbone (timm names), a head and the PAMI masks."""
    rng = np.random.default_rng(seed)

    def f(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    backbone = {"patch_embed": {"proj": {"kernel": f(2, 2, 3, 4), "bias": f(4)}},
                "cls_token": f(1, 1, 4), "pos_embed": f(1, 5, 4),
                **{f"blocks_{i}": {"mlp": {"kernel": f(4, 4), "bias": f(4)}}
                   for i in range(NUM_BLOCKS)},
                "norm": {"scale": f(4), "bias": f(4)}}
    return {"model": {"backbone": backbone, "head": {"kernel": f(4, 3), "bias": f(3)}},
            "masks": f(2, 3)}


def _grads(params, steps, norms=None):
    grads = [_params(seed=10 + t) for t in range(steps)]
    if norms is not None:  # rescale step t's gradient to global norm norms[t]
        scales = [n / float(optax.tree.norm(g)) for g, n in zip(grads, norms)]
        grads = [jax.tree.map(lambda x, s=s: x * s, g) for g, s in zip(grads, scales)]
    return grads


def _flat(tree):
    return {"/".join(k): np.asarray(v, np.float64)
            for k, v in flax.traverse_util.flatten_dict(jax.device_get(tree)).items()}


def _run(optimizer, params, grads):
    state = optimizer.init(params)
    for g in grads:
        updates, state = optimizer.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _updates(optimizer, params, grads, rates_at=None):
    """Each step's update at fixed params (so two optimisers see the same inputs)."""
    state, out = optimizer.init(params), []
    for t, g in enumerate(grads):
        if rates_at is not None:
            state = optim.set_learning_rates(state, rates_at(t))
        updates, state = optimizer.update(g, state, params)
        out.append(_flat(updates))
    return out


def _torch_run(params, grads, algorithm, clip=0.0):
    """torch's Adam(weight_decay) / AdamW with one param group per optimiser group."""
    # The groups written out (not optim.param_groups): a leaf in the wrong group would train at
    # the wrong rate here and differ.
    names = {k: "head" if k.startswith("model/head/") else
             "backbone" if k.startswith("model/backbone/") else "masks" for k in _flat(params)}
    tensors = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True)
               for k, v in _flat(params).items()}
    cls = {"adam_coupled": torch.optim.Adam, "adamw": torch.optim.AdamW}[algorithm]
    opt = cls([{"params": [t for k, t in tensors.items() if names[k] == g],
                "lr": RATES[g], "weight_decay": DECAYS[g]} for g in RATES],
              betas=(0.9, 0.999), eps=1e-8)
    norms = []
    for g in grads:
        for k, v in _flat(g).items():
            tensors[k].grad = torch.tensor(v, dtype=torch.float32)
        if clip:
            norms.append(float(torch.nn.utils.clip_grad_norm_(list(tensors.values()), clip)))
        opt.step()
    return {k: t.detach().numpy().astype(np.float64) for k, t in tensors.items()}, norms


def _max_diff(a, b):
    return max(np.abs(a[k] - b[k]).max() for k in a)


@pytest.mark.parametrize("algorithm", ["adamw", "adam_coupled"])
def test_matches_torch_adam_and_adamw(algorithm):
    params = _params()
    grads = _grads(params, 5)
    ours = _flat(_run(optim.make_optimizer(_optim_config(algorithm=algorithm)), params, grads))
    theirs, _ = _torch_run(params, grads, algorithm)
    assert _max_diff(ours, theirs) < 1e-6
    other = "adam_coupled" if algorithm == "adamw" else "adamw"
    assert _max_diff(ours, _torch_run(params, grads, other)[0]) > 1e-5  # the test can tell


def _old_coupled_adam(learning_rate, weight_decay, b1=0.9, b2=0.999, eps=1e-8):
    """The optimiser before the transformer options, verbatim."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                       optax.scale_by_learning_rate(learning_rate))


def test_defaults_and_old_configs_keep_the_state_structure_and_values():
    params = dict(_params(), loss={"beta": jnp.ones(3)})
    loss_rates = {"beta": 5e-4}
    groups = {g: optax.inject_hyperparams(_old_coupled_adam)(
        learning_rate=RATES[g], weight_decay=DECAYS[g]) for g in RATES}
    groups["loss_beta"] = optax.inject_hyperparams(_old_coupled_adam)(
        learning_rate=5e-4, weight_decay=0.0)
    reference = optax.multi_transform(groups, optim.param_groups)
    old_config = ml_collections.ConfigDict(  # a config from before the new keys
        {g: {"learning_rate": RATES[g], "weight_decay": DECAYS[g]} for g in RATES})
    grads = [dict(g, loss={"beta": jnp.full(3, 0.5)}) for g in _grads(params, 2)]
    expected = _run(reference, params, grads)
    for config in (_optim_config(), old_config):
        optimizer = optim.make_optimizer(config, loss_rates)
        assert (jax.tree.structure(optimizer.init(params))
                == jax.tree.structure(reference.init(params)))
        chex.assert_trees_all_equal(_run(optimizer, params, grads), expected)


@pytest.mark.parametrize("algorithm", ["adamw", "adam_coupled"])
def test_layer_decay_scales_each_vit_layer(algorithm):
    decay = 0.5
    params = _params()
    grads = _grads(params, 2)
    plain = _updates(optim.make_optimizer(_optim_config(algorithm=algorithm)), params, grads)
    decayed = _updates(optim.make_optimizer(_optim_config(algorithm=algorithm,
                                                          layer_decay=decay)), params, grads)
    # timm's `^norm` group (99999,) lands with the last block: id L, not L + 1.
    layer = {"patch_embed": 0, "cls_token": 0, "pos_embed": 0, "norm": NUM_BLOCKS,
             **{f"blocks_{i}": i + 1 for i in range(NUM_BLOCKS)}}
    for p, d in zip(plain, decayed):
        for key in p:
            parts = key.split("/")
            if parts[:2] == ["model", "backbone"]:
                expected = decay ** (NUM_BLOCKS + 1 - layer[parts[2]])
            else:  # head and masks: unaffected
                expected = 1.0
            np.testing.assert_allclose(d[key], expected * p[key], rtol=1e-6, err_msg=key)


def test_warmup_ramps_the_network_rates_and_composes_with_set_learning_rates():
    steps = 3
    params = _params()
    grads = _grads(params, 6)
    mult = [1.0, 2.0, 1.0, 0.5, 2.0, 1.0]
    base = optim.base_learning_rates(_optim_config())

    def rates_at(t):
        return {"backbone": base["backbone"] * mult[t]}

    plain = _updates(optim.make_optimizer(_optim_config()), params, grads)
    warm = _updates(optim.make_optimizer(_optim_config(warmup_steps=steps)), params, grads,
                    rates_at)
    for t, (p, w) in enumerate(zip(plain, warm)):
        ramp = min(1.0, (t + 1) / steps)
        for key in p:
            group = optim.group_of(tuple(key.split("/")))
            expected = {"backbone": ramp * mult[t], "head": ramp, "masks": 1.0}[group]
            np.testing.assert_allclose(w[key], expected * p[key], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("algorithm", ["adamw", "adam_coupled"])
def test_clipping_matches_torch_clip_grad_norm_over_all_parameters(algorithm):
    max_norm = 1.0
    params = _params()
    grads = _grads(params, 3, norms=[10.0, 0.1, 5.0])  # clipped, not clipped, clipped
    ours = _flat(_run(optim.make_optimizer(_optim_config(algorithm=algorithm,
                                                         clip_grad_norm=max_norm)),
                      params, grads))
    theirs, torch_norms = _torch_run(params, grads, algorithm, clip=max_norm)
    norms64 = [np.sqrt(sum((v ** 2).sum() for v in _flat(g).values())) for g in grads]
    np.testing.assert_allclose(torch_norms, norms64, rtol=1e-5)
    np.testing.assert_allclose(norms64, [10.0, 0.1, 5.0], rtol=1e-5)
    # torch scales by max_norm / (norm + 1e-6), optax by max_norm / norm: ~1e-7 relative.
    assert _max_diff(ours, theirs) < 1e-6
    assert _max_diff(ours, _torch_run(params, grads, algorithm)[0]) > 1e-4  # clipping mattered


def test_rate_helpers_work_inside_the_clipping_chain():
    params = _params()
    optimizer = optim.make_optimizer(_optim_config(clip_grad_norm=1.0, warmup_steps=2))
    state = optimizer.init(params)
    assert isinstance(state, tuple) and isinstance(state[-1], optax.MultiTransformState)
    assert optim.learning_rates(state) == pytest.approx(RATES)
    state = optim.set_learning_rates(state, {"backbone": 0.0, "masks": 1e-4, "nope": 1.0})
    assert optim.learning_rates(state) == pytest.approx(dict(RATES, backbone=0.0, masks=1e-4))
    for g in _grads(params, 2):
        _, state = optimizer.update(g, state, params)
    fresh = optim.reset_group(state, optimizer, params, "masks")
    assert jax.tree.structure(fresh) == jax.tree.structure(state)
    assert optim.learning_rates(fresh) == optim.learning_rates(state)
    def masks_adam(opt_state):  # masked(inject(chain(decay, adam, rate)))
        return opt_state[-1].inner_states["masks"].inner_state

    assert int(masks_adam(state).count) == 2 and np.asarray(
        masks_adam(state).inner_state[1].mu["masks"]).any()
    assert int(masks_adam(fresh).count) == 0
    assert not np.asarray(masks_adam(fresh).inner_state[1].mu["masks"]).any()
    chex.assert_trees_all_equal(fresh[-1].inner_states["head"], state[-1].inner_states["head"])


@pytest.mark.parametrize("algorithm", ["adamw", "adam_coupled"])
def test_no_decay_1d_spares_biases_norms_and_vit_tokens(algorithm):
    params = _params()
    zero = [jax.tree.map(jnp.zeros_like, params)]  # with no gradient only the decay moves
    decays = {"model/backbone/patch_embed/proj/kernel", "model/head/kernel", "masks",
              *(f"model/backbone/blocks_{i}/mlp/kernel" for i in range(NUM_BLOCKS))}
    masked = _updates(optim.make_optimizer(_optim_config(algorithm=algorithm,
                                                         no_decay_1d=True)), params, zero)[0]
    everywhere = _updates(optim.make_optimizer(_optim_config(algorithm=algorithm)),
                          params, zero)[0]
    for key, update in masked.items():
        assert np.abs(everywhere[key]).min() > 0, key
        if key in decays:
            np.testing.assert_array_equal(update, everywhere[key], err_msg=key)
        else:
            assert not update.any(), key
    if algorithm == "adamw":  # decoupled: exactly -lr * wd * theta
        flat = _flat(params)
        np.testing.assert_allclose(masked["model/head/kernel"],
                                   -RATES["head"] * DECAYS["head"] * flat["model/head/kernel"],
                                   rtol=1e-6)


@pytest.mark.parametrize("key, value, model", [
    ("algorithm", "sgd", "resnet50"),
    ("layer_decay", 0.0, "vit_s16"),
    ("layer_decay", 1.5, "vit_s16"),
    ("layer_decay", 0.75, "resnet50"),
    ("warmup_steps", -1, "resnet50"),
    ("clip_grad_norm", -0.5, "resnet50"),
])
def test_check_optim_config_names_the_key(key, value, model):
    config = defaults.get_config()
    optim.check_optim_config(config)
    config.model.name = model
    config.optim[key] = value
    with pytest.raises(ConfigError, match=f"optim.{key}") as error:
        optim.check_optim_config(config)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("model", ["resnet50", "resnet_tiny"])
def test_layer_decay_refuses_a_resnet_and_names_it(model):
    config = defaults.get_config()
    config.model.name = model
    config.optim.layer_decay = 0.75
    with pytest.raises(ConfigError, match=f"optim.layer_decay=0.75 needs a ViT or ConvNeXt "
                                          f"backbone .* got model.name='{model}'") as error:
        optim.check_optim_config(config)
    assert "\n" not in str(error.value)


def test_layer_decay_on_a_resnet_tree_fails_when_the_optimiser_traces():
    """make_optimizer without check_optim_config: a backbone with no timm layer ids is refused
    (not trained at one rate) when the update first sees the tree."""
    params = {"model": _network("resnet_tiny")}
    optimizer = optim.make_optimizer(_no_decay_config(layer_decay=0.5))
    grads = jax.tree.map(jnp.ones_like, params)
    with pytest.raises(ConfigError, match="optim.layer_decay < 1 needs a ViT or ConvNeXt") as err:
        optimizer.update(grads, optimizer.init(params), params)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("model", ["vit_b16", "convnext_tiny", "convnext_micro"])
def test_check_optim_config_accepts_layer_decay_for_vits_and_convnexts(model):
    config = defaults.get_config()
    config.model.name = model
    config.optim.update(algorithm="adamw", layer_decay=0.7)
    optim.check_optim_config(config)


def test_check_optim_config_accepts_a_vit_recipe():
    config = defaults.get_config()
    config.model.name = "vit_b16"
    config.optim.update(algorithm="adamw", layer_decay=0.65, warmup_steps=100,
                        clip_grad_norm=3.0, no_decay_1d=True)
    optim.check_optim_config(config)


def test_every_option_on_traces_once_while_rates_change():
    params = _params()
    optimizer = optim.make_optimizer(_optim_config(
        algorithm="adamw", layer_decay=0.7, warmup_steps=2, clip_grad_norm=1.0,
        no_decay_1d=True))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    state = optimizer.init(params)
    for t, g in enumerate(_grads(params, 4)):
        rates = {"backbone": 1e-3 * (t + 1), "head": 0.0 if t == 2 else 1e-2}
        state = optim.set_learning_rates(state, rates)
        new_params, state = step(params, state, g)
        assert optim.learning_rates(state)["backbone"] == pytest.approx(1e-3 * (t + 1))
        head_moved = not np.array_equal(new_params["model"]["head"]["kernel"],
                                        params["model"]["head"]["kernel"])
        assert head_moved == (t != 2)
        params = new_params


def _numpy_lamb(params, grads, rate, decay, b1=0.9, b2=0.999, eps=1e-8):
    """LAMB (You et al. 2020) in float64 by hand: AdamW's step, then each leaf's step scaled
    by ||param|| / ||step|| (1 where either norm is 0). Returns each step's update."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    out = []
    for t, g in enumerate(grads, 1):
        step = {}
        for k, p in params.items():
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            u = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps) + decay * p
            p_norm, u_norm = np.linalg.norm(p), np.linalg.norm(u)
            ratio = p_norm / u_norm if p_norm > 0 and u_norm > 0 else 1.0
            step[k] = -rate * ratio * u
        out.append(step)
    return out


def test_trust_ratio_with_adamw_is_lamb_on_the_network_groups():
    params = _params()
    grads = _grads(params, steps=3)
    config = _optim_config(algorithm="adamw", trust_ratio=True)
    got = _updates(optim.make_optimizer(config), params, grads)
    flat_params = _flat(params)
    flat_grads = [_flat(g) for g in grads]
    for group in ("backbone", "head"):
        keys = [k for k in flat_params if k.startswith(f"model/{group}/")]
        want = _numpy_lamb({k: flat_params[k] for k in keys},
                           [{k: g[k] for k in keys} for g in flat_grads],
                           RATES[group], DECAYS[group])
        for t in range(3):
            for k in keys:
                # float32 against float64: to 1e-5 of the leaf's largest step.
                np.testing.assert_allclose(got[t][k], want[t][k], rtol=0,
                                           atol=1e-5 * np.abs(want[t][k]).max())
    # The masks keep plain AdamW: their first step is -rate * sign(g) - rate * decay * p.
    masks = flat_params["masks"]
    np.testing.assert_allclose(
        got[0]["masks"], -RATES["masks"] * (np.sign(flat_grads[0]["masks"])
                                            + DECAYS["masks"] * masks), rtol=1e-4)


# -- every leaf's group and rate, from a table written here ----------------------------------------

def _observed_rates(optimizer, params):
    """Each leaf's rate as the optimiser applies it: Adam's first step on a gradient of ones,
    with no weight decay, is -rate (m / sqrt(v) = 1), whatever the code calls the group."""
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return {k: -float(np.mean(v)) for k, v in _flat(updates).items()}


def _network(name, pooling="avg", **vit_options):
    from dnc_jax.models.embedder import make_embedder

    config = defaults.get_config().model
    config.update(name=name, width=8, embedding_dim=8, pretrained="", pooling=pooling)
    config.vit.update(vit_options)
    model = make_embedder(config, jnp.float32)
    variables = model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)), train=False)
    return variables["params"]


def _no_decay_config(**options):
    config = _optim_config(**options)
    for group in RATES:
        config[group].weight_decay = 0.0
    return config


def test_resnet_leaves_train_at_their_groups_rates():
    params = {"model": _network("resnet_tiny"), "masks": jnp.ones((2, 8)),
              "loss": {"beta": jnp.ones((5,)), "proxies": jnp.ones((5, 8))}}
    loss_rates = {"beta": 5e-4, "proxies": 3e-3}
    got = _observed_rates(optim.make_optimizer(_no_decay_config(), loss_rates), params)
    # path prefix -> rate: the backbone (BN scale and bias included, as the official code's
    # groups have them), the head, the PAMI masks and each loss parameter on its own rate.
    table = [("model/backbone/", 1e-2), ("model/head/", 2e-2), ("masks", 5e-3),
             ("loss/beta", 5e-4), ("loss/proxies", 3e-3)]
    assert any("bn" in k for k in got) and len(got) > 20
    for key, rate in got.items():
        want = next(r for prefix, r in table if key.startswith(prefix))
        assert rate == pytest.approx(want, rel=1e-6), key


def test_vit_leaves_train_at_their_layer_decayed_rates():
    # Registers and the MAP head: timm puts `reg_token` in the stem, `attn_pool` after the norm.
    params = {"model": _network("vit_micro", "map", reg_tokens=4)}
    decay = 0.5
    got = _observed_rates(optim.make_optimizer(_no_decay_config(layer_decay=decay)), params)
    blocks = sorted({k.split("/")[2] for k in got if k.split("/")[2].startswith("blocks_")})
    depth = len(blocks)
    assert depth >= 2

    def want(key):
        # timm's layer ids (VisionTransformer.group_matcher: stem
        # `^cls_token|reg_token|pos_embed|patch_embed|norm_pre`, `^blocks.(i)`, `^norm` with
        # the last block, the rest after it): embeddings 0, block i is i + 1, the final norm
        # depth, the rest depth + 1; a leaf trains at rate x decay^(depth + 1 - id). The head
        # is not part of the backbone.
        parts = key.split("/")
        if parts[1] == "head":
            return 2e-2
        name = parts[2]
        layer = (0 if name in ("patch_embed", "cls_token", "reg_token", "pos_embed",
                               "norm_pre") else
                 int(name.split("_")[1]) + 1 if name.startswith("blocks_") else
                 depth if name == "norm" else depth + 1)
        return 1e-2 * decay ** (depth + 1 - layer)

    assert {k.split("/")[2] for k in got if k.startswith("model/backbone")} >= {
        "patch_embed", "cls_token", "reg_token", "pos_embed", "norm", "attn_pool", *blocks}
    for key, rate in got.items():
        assert rate == pytest.approx(want(key), rel=1e-6), key


# -- ConvNeXt layer ids: timm's param_groups_layer_decay with ConvNeXt.group_matcher ----------
#
# timm 1.0.31 (timm/optim/_param_groups.py, timm/models/_manipulate.py group_with_matcher,
# timm/models/convnext.py ConvNeXt.group_matcher(coarse=False)) sorts each parameter by the key
#   `^stem`                         -> (0,)
#   `^stages.(s).downsample`        -> (1, s, 0)   the suffix (0,): the key of the stage's block 0
#   `^stages.(s).blocks.(b)`        -> (1, s, b)
#   anything else (head.norm, head.fc) -> (inf,)
# and numbers the distinct keys 0, 1, 2, ... in sorted order; lr_scale = layer_decay^(max - id).
# A stage's downsample therefore shares its first block's id, the layer scale `gamma` (a block
# parameter) its block's, and the head norm is last, one past the last block. Checked against
# timm itself for every parameter of convnext_micro's depths, _tiny, _small and _base by a
# script outside the test suite (timm needs torchvision, which cannot be installed here).

# convnext_micro, depths (1, 1, 1, 1), by hand from the keys above: stem (0,) -> 0;
# stages.0.blocks.0 (1, 0, 0) -> 1 (stage 0 has no downsample); stages.1.downsample and
# stages.1.blocks.0 both (1, 1, 0) -> 2; stage 2 -> 3; stage 3 -> 4; head.norm (inf,) -> 5.
MICRO_LAYER_IDS = {
    "stem_0": 0, "stem_1": 0,
    "stages_0/blocks_0": 1,
    "stages_1/downsample_0": 2, "stages_1/downsample_1": 2, "stages_1/blocks_0": 2,
    "stages_2/downsample_0": 3, "stages_2/downsample_1": 3, "stages_2/blocks_0": 3,
    "stages_3/downsample_0": 4, "stages_3/downsample_1": 4, "stages_3/blocks_0": 4,
    "head/norm": 5,
}


def _convnext_backbone_paths(name):
    from dnc_jax.models import convnext

    model = convnext.make_convnext(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    return list(flax.traverse_util.flatten_dict(shapes["params"]))


def _convnext_layer_ids(name):
    paths = _convnext_backbone_paths(name)
    layout = optim.backbone_layout(paths)
    return {path: optim.layer_id(path, layout) for path in paths}, layout


def test_convnext_micro_layer_ids_are_timms():
    ids, layout = _convnext_layer_ids("convnext_micro")
    assert layout == optim.BackboneLayout("convnext", (1, 1, 1, 1))
    used = set()
    for path, got in ids.items():
        module = next(m for m in MICRO_LAYER_IDS if "/".join(path).startswith(m + "/"))
        assert got == MICRO_LAYER_IDS[module], path
        used.add(module)
    assert used == set(MICRO_LAYER_IDS) and len(ids) == 54
    assert ids["stages_3", "blocks_0", "gamma"] == ids["stages_3", "blocks_0", "conv_dw",
                                                      "kernel"] == 4


def test_convnext_tiny_layer_ids_are_timms():
    ids, layout = _convnext_layer_ids("convnext_tiny")
    depths = (3, 3, 9, 3)
    assert layout == optim.BackboneLayout("convnext", depths)
    # Block b of stage s: 1 + the blocks of the earlier stages + b; the stages start at
    # 1, 1 + 3, 1 + 6, 1 + 15 = 1, 4, 7, 16 and the head norm is 1 + 18 = 19.
    starts = {0: 1, 1: 4, 2: 7, 3: 16}
    head = 19
    for path, got in ids.items():
        if path[0] in ("stem_0", "stem_1"):
            assert got == 0, path
        elif path[0] == "head":
            assert got == head, path
        elif path[1].startswith("downsample_"):
            assert got == starts[int(path[0].split("_")[1])], path
        else:
            assert got == starts[int(path[0].split("_")[1])] + int(path[1].split("_")[1]), path
    # Structure: every id from the stem's 0 to the head's max is used; along the network's
    # order (stem, stage by stage downsample then blocks, head) the ids never decrease; each
    # block (all its 9 tensors, gamma included) is one id, shared only with its downsample.
    assert sorted(set(ids.values())) == list(range(head + 1)) and max(ids.values()) == head
    def position(path):  # where the tensor's module sits in the forward pass
        if path[0].startswith("stem_"):
            return (0,)
        if path[0] == "head":
            return (2,)
        block = -1 if path[1].startswith("downsample_") else int(path[1].split("_")[1])
        return (1, int(path[0].split("_")[1]), block)

    walk = [ids[p] for p in sorted(ids, key=position)]
    assert walk == sorted(walk) and walk[0] == 0 and walk[-1] == head
    sizes = {i: sum(1 for v in ids.values() if v == i) for i in range(head + 1)}
    assert sizes[0] == 4 and sizes[head] == 2
    assert [sizes[starts[s]] for s in range(4)] == [9, 13, 13, 13]  # + downsample's 4
    assert all(sizes[i] == 9 for i in range(1, head) if i not in starts.values())


def test_convnext_leaves_train_at_their_layer_decayed_rates():
    params = {"model": _network("convnext_micro")}
    decay = 0.5
    got = _observed_rates(optim.make_optimizer(_no_decay_config(layer_decay=decay)), params)
    assert len(got) == 54 + 2  # the backbone's 54 tensors and the head's kernel and bias
    for key, rate in got.items():
        parts = key.split("/")
        if parts[1] == "head":  # the embedding head is not part of the backbone
            assert rate == pytest.approx(2e-2, rel=1e-6), key
            continue
        module = next(m for m in MICRO_LAYER_IDS if "/".join(parts[2:]).startswith(m + "/"))
        # timm's lr_scale: decay^(max id - id), the head norm's 5 the max.
        want = 1e-2 * decay ** (5 - MICRO_LAYER_IDS[module])
        assert rate == pytest.approx(want, rel=1e-6), key
