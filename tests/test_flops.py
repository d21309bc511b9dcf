"""bench/flops.py's FLOP count (2 x multiply-adds of the convolutions and matrix products, read
from a jaxpr): against counts worked out by hand, against the published ResNet-50 figure
(torchvision: 4.09 GMACs at 224 px) and against XLA's CPU cost analysis, which counts
convolutions (on a GPU it does not: cuDNN custom calls)."""
from __future__ import annotations

import importlib.util
import os
import warnings

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from dnc_jax.configs import default
from dnc_jax.models.embedder import make_embedder

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "flops.py")
_spec = importlib.util.spec_from_file_location("bench_flops", _PATH)
flops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flops)

NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, **kw):
    return lax.conv_general_dilated(x, w, dimension_numbers=NHWC, **kw)


def _xla_flops(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost["flops"]


def test_dense_counts_two_flops_a_multiply_add_through_jit():
    x, w = jnp.ones((5, 64)), jnp.ones((64, 10))
    assert flops.jaxpr_flops(lambda x, w: x @ w, x, w) == 2 * 5 * 64 * 10
    assert flops.jaxpr_flops(jax.jit(lambda x, w: x @ w + 1.0), x, w) == 2 * 5 * 64 * 10
    # a batched contraction: [3, 5, 64] x [3, 64, 10]
    assert flops.jaxpr_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
                             jnp.ones((3, 5, 64)), jnp.ones((3, 64, 10))) == 2 * 3 * 5 * 64 * 10


def test_conv_with_stride_padding_and_feature_groups_by_hand():
    # x [2, 9, 10, 8], 3x3 kernel of 4 groups (2 input features each) -> 12, stride (2, 1),
    # one row of padding top and bottom: output [2, 5, 8, 12].
    x, w = jnp.ones((2, 9, 10, 8)), jnp.ones((3, 3, 2, 12))
    kw = dict(window_strides=(2, 1), padding=((1, 1), (0, 0)), feature_group_count=4)
    assert _conv(x, w, **kw).shape == (2, 5, 8, 12)
    every_tap = 2 * 5 * 8 * 12 * 2 * 3 * 3  # outputs x inputs per group x taps
    assert flops.jaxpr_flops(lambda x, w: _conv(x, w, **kw), x, w,
                             count_padding=True) == 2 * every_tap
    # Along the height, taps (output 0, kernel row 0) and (output 4, kernel row 2) read the
    # padding: 15 - 2 = 13 row pairs of 15; all 8 x 3 column pairs are real.
    real_taps = 2 * 12 * 2 * 13 * 24
    assert flops.jaxpr_flops(lambda x, w: _conv(x, w, **kw), x, w) == 2 * real_taps


def test_depthwise_conv_and_its_batch_grouped_weight_gradient():
    x, w = jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 1, 4))

    def f(w, x):
        return _conv(x, w, window_strides=(1, 1), padding="SAME", feature_group_count=4)

    assert flops.jaxpr_flops(f, w, x, count_padding=True) == 2 * 4 * 36 * 9
    forward = 2 * 4 * 16 * 16  # per spatial dimension 6 x 3 - 2 pairs read the image
    assert flops.jaxpr_flops(f, w, x) == forward
    ct = jnp.ones((1, 6, 6, 4))

    def weight_grad(w, x, ct):
        return jax.vjp(f, w, x)[1](ct)[0]

    eqns = jax.make_jaxpr(weight_grad)(w, x, ct).jaxpr.eqns
    assert any(e.params.get("batch_group_count", 1) == 4 for e in eqns)
    # Each weight tap sums over the same (image, position) pairs as the forward pass; the
    # forward convolution and the input gradient are dead code and are not counted.
    assert flops.jaxpr_flops(weight_grad, w, x, ct) == forward


def test_scan_counts_its_length_cond_its_costliest_branch_while_its_body_once():
    w = jnp.ones((4, 4))
    one = 2 * 4 * 4 * 4

    def scanned(c, w):
        return lax.scan(lambda c, _: (c @ w, None), c, None, length=7)[0]

    assert flops.jaxpr_flops(scanned, w, w) == 7 * one

    def branched(p, c, w):
        return lax.cond(p, lambda c: c @ w @ w, lambda c: c @ w, c)

    assert flops.jaxpr_flops(branched, True, w, w) == 2 * one

    def looped(c, w):
        return lax.while_loop(lambda s: s[1] < 5, lambda s: (s[0] @ w, s[1] + 1), (c, 0))[0]

    with pytest.warns(UserWarning, match="while loop"):
        assert flops.jaxpr_flops(looped, w, w) == one


def test_resnet50_forward_matches_torchvision_published_count():
    config = default.get_config()
    config.model.name = "resnet50"
    config.model.pretrained = ""
    model = make_embedder(config.model, jnp.float32)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape),
                                                  train=False))

    def forward(variables, x):
        return model.apply(variables, x, train=False)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no while loop in the network
        macs = flops.jaxpr_flops(forward, variables, x, count_padding=True) / 2
        real = flops.jaxpr_flops(forward, variables, x) / 2
    assert macs == pytest.approx(4.09e9, rel=0.01)  # torchvision's ResNet-50: 4.09 GMACs
    assert 0.95 * macs < real < macs  # taps on the zero padding left out


def test_agrees_with_xla_cpu_cost_analysis_on_a_conv_net_and_its_gradients():
    key = jax.random.key(0)
    x = jax.random.normal(key, (2, 17, 19, 8))
    ws = (jax.random.normal(key, (3, 3, 8, 16)), jax.random.normal(key, (5, 5, 4, 32)),
          jax.random.normal(key, (96, 10)))

    def net(ws, x):  # no elementwise ops: XLA counts those too
        y = _conv(x, ws[0], window_strides=(2, 2), padding="SAME")
        y = _conv(y, ws[1], window_strides=(1, 1), padding=((2, 1), (0, 2)),
                  rhs_dilation=(1, 2), feature_group_count=4)
        return y.reshape(2, -1)[:, :96] @ ws[2]

    counted = flops.jaxpr_flops(net, ws, x)
    assert counted > 0 and counted == _xla_flops(net, ws, x)
    ct = jnp.ones_like(net(ws, x))

    def input_grad(ws, x, ct):
        return jax.vjp(net, ws, x)[1](ct)[1]

    def weight_grads(ws, x, ct):
        return jax.vjp(net, ws, x)[1](ct)[0]

    for grad in (input_grad, weight_grads):  # lhs-dilated and window-dilated convolutions
        assert flops.jaxpr_flops(grad, ws, x, ct) == _xla_flops(grad, ws, x, ct)
