"""FLOPs of a JAX function counted from its jaxpr: 2 x the multiply-adds of every matrix product
and convolution, the work a GPU's tensor cores do.

    from flops import jaxpr_flops                     # bench/ scripts: this folder is on the path
    gflop = jaxpr_flops(step, state, batch, phase, key) / 1e9

Why not XLA's `compiled.cost_analysis()["flops"]`: on a GPU the convolutions become cuDNN
custom calls, which XLA's cost analysis does not count (a ResNet-50 step reads 0.2-0.3
GFLOP/image there instead of ~24). On a CPU XLA counts them, plus every elementwise op.

The count traces `fn` with `jax.make_jaxpr` (no compilation) and sums `dot_general` and
`conv_general_dilated`, recursing into sub-jaxprs (jit, custom_jvp/vjp, remat, ...): a scan's
body counts `length` times, a cond its costliest branch, a while loop's body once (its trip
count is a run-time value: a warning says so). A convolution counts the kernel taps that land
on real input elements, not on its zero padding or between the elements of a dilated input
(XLA's rule, so the two agree on a CPU); `count_padding=True` counts taps on the padding too,
the convention of published per-model figures (torchvision: ResNet-50 4.09 GMACs).
Elementwise ops, reductions and transcendentals are not counted.
"""
from __future__ import annotations

import math
import warnings

import jax
import numpy as np

__all__ = ["jaxpr_flops", "closed_jaxpr_flops"]


def jaxpr_flops(fn, *args, count_padding: bool = False, **kwargs) -> float:
    """2 x the multiply-adds of the matrix products and convolutions of `fn(*args, **kwargs)`
    (traced, not compiled; `args` may be arrays or `jax.ShapeDtypeStruct`s)."""
    closed = jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)
    return closed_jaxpr_flops(closed, count_padding=count_padding)


def closed_jaxpr_flops(closed, count_padding: bool = False) -> float:
    """The count of `jaxpr_flops` for a jaxpr already traced (a ClosedJaxpr or a Jaxpr)."""
    notes = set()
    flops = _jaxpr(_dce(_open(closed)), count_padding, notes)
    if notes:
        warnings.warn("jaxpr_flops: " + "; ".join(sorted(notes)), stacklevel=2)
    return float(flops)


def _dce(jaxpr):
    """The jaxpr without the equations no output needs (a jaxpr is traced as written: a vjp's
    unused cotangent would count, where XLA drops it). jax's own pass, internal API: without
    it, the jaxpr as traced."""
    try:
        from jax._src.interpreters import partial_eval as pe

        return pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))[0]
    except Exception:  # noqa: BLE001 - another jax version: count what was traced
        return jaxpr


def _open(jaxpr):
    """The Jaxpr of a ClosedJaxpr (which also answers `.eqns`), or the Jaxpr itself."""
    return getattr(jaxpr, "jaxpr", jaxpr)


def _is_jaxpr(value) -> bool:
    return hasattr(_open(value), "eqns")


def _jaxpr(jaxpr, count_padding, notes) -> int:
    return sum(_eqn(eqn, count_padding, notes) for eqn in jaxpr.eqns)


def _eqn(eqn, count_padding, notes) -> int:
    name, params = eqn.primitive.name, eqn.params
    if name == "dot_general":
        return _dot_general(eqn)
    if name == "conv_general_dilated":
        return _conv(eqn, count_padding)
    if name == "scan":
        return params["length"] * _jaxpr(_open(params["jaxpr"]), count_padding, notes)
    if name == "while":
        notes.add("a while loop's body and condition counted once each (trip count unknown "
                  "when tracing)")
        return (_jaxpr(_open(params["body_jaxpr"]), count_padding, notes)
                + _jaxpr(_open(params["cond_jaxpr"]), count_padding, notes))
    if name == "cond":
        return max(_jaxpr(_open(b), count_padding, notes) for b in params["branches"])
    total = 0  # jit/pjit, closed_call, custom_jvp_call, custom_vjp_call, remat, shard_map, ...
    for value in params.values():
        inner = value if isinstance(value, (tuple, list)) else (value,)
        for item in inner:
            if _is_jaxpr(item):
                total += _jaxpr(_open(item), count_padding, notes)
    return total


def _dot_general(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    return 2 * math.prod(out_shape) * math.prod(lhs_shape[d] for d in lhs_contract)


def _conv(eqn, count_padding) -> int:
    p = eqn.params
    lhs_shape, rhs_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    n_spatial = len(lhs_spec) - 2
    # Every output element (batch, feature, position) sums over the kernel's input features
    # (C_in / feature_group_count, the rhs's own in-feature size; batch_group_count splits the
    # batch instead and leaves the sum over all of C_in) and the kernel taps that hit the input.
    macs = out_shape[out_spec[0]] * out_shape[out_spec[1]] * rhs_shape[rhs_spec[1]]
    lhs_dilation = p.get("lhs_dilation") or (1,) * n_spatial
    rhs_dilation = p.get("rhs_dilation") or (1,) * n_spatial
    for i in range(n_spatial):
        macs *= _valid_pairs(lhs_shape[lhs_spec[2 + i]], rhs_shape[rhs_spec[2 + i]],
                             out_shape[out_spec[2 + i]], p["window_strides"][i],
                             p["padding"][i][0], lhs_dilation[i], rhs_dilation[i],
                             count_padding)
    return 2 * macs


def _valid_pairs(size, kernel, out, stride, pad_lo, lhs_dilation, rhs_dilation,
                 count_padding) -> int:
    """(output position, kernel tap) pairs along one spatial dimension whose tap reads an
    input element (with `count_padding`, or the padding), never a hole of a dilated input."""
    pos = (np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * rhs_dilation
           - pad_lo)
    extent = (size - 1) * lhs_dilation + 1
    inside = (pos >= 0) & (pos < extent)
    on_element = inside & (pos % lhs_dilation == 0)
    return int(np.sum(on_element | (~inside if count_padding else False)))
