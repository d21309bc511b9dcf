"""A trained run's evaluation embedder as an ONNX model: eval view in, embedding out.

    dnc-jax export --workdir=runs/sop --out=model.onnx [--batch_size=N]

Input `views`: uint8 [N, S, S, 3], NHWC, RGB, S = the run's `augment.image_size`. The image is
cut on the host first, exactly as evaluation cuts it (`data.host_views.eval_view`, torchvision's
Resize + CenterCrop on a PIL image): the shorter side resized to R = `augment.eval_resize_size`
(the longer one to int(R * long / short)), PIL bilinear, then the centre S x S crop at offsets
int(round((side - S) / 2)). The graph does the rest, as `embed_fn.embed_views` does: ImageNet
mean/std normalisation of the [0, 255] values, the network, and the evaluation embedding (the
separately L2-normalised learner blocks of the checkpoint's epoch, concatenated). Output
`embedding`: float32 [N, d].

The network is exported in float32 even when the run trained in bfloat16 (`dtype`): runtimes
seldom have bfloat16 kernels for it (onnxruntime's CPU provider has few), and the float32
network is the one the bfloat16 computation approximates; the ONNX embedding then matches a
float32 JAX embedding (a CPU's, with dtype 'auto') to rounding, and a bfloat16 one only to
bfloat16's precision. N is a symbolic dimension unless --batch_size fixes it (for runtimes that want
static shapes). Writes

    model.onnx        the model; its doc_string and metadata state the input and preprocessing
    model.onnx.json   the same description, with the provenance of the weights (step, epoch)

Needs the exporter, which the rest of dnc_jax does not: `pip install "dnc-jax[export]"`, then
`pip install --no-deps "jax2onnx>=0.17.1,<0.18"` (requirements-export.txt says why no deps).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time

import numpy as np
from absl import flags

from dnc_jax import cli
from dnc_jax import defaults
from dnc_jax.errors import UserError

INPUT_NAME = "views"
OUTPUT_NAME = "embedding"
BATCH_DIM = "N"   # the symbolic batch dimension of a dynamic export
_INSTALL = ('pip install "dnc-jax[export]" and pip install --no-deps "jax2onnx>=0.17.1,<0.18" '
            '(or, in a checkout: make test-venv)')


class ExportError(UserError):
    """An export that cannot be made as asked."""


class ExporterMissing(ExportError):
    """The optional ONNX exporter is not installed."""


def _define_flags():
    # Defined only when run as a program, like embed.py: importing this module next to another
    # tool that also defines --workdir must not clash.
    cli.define_trained_run_flags(
        out_help="Output .onnx file; its description goes beside it (X.onnx.json).",
        batch_help="A fixed batch size for the model's input (default: a dynamic batch "
                   "dimension N).")


def description_path(out_path: str) -> str:
    """model.onnx -> model.onnx.json: where the description of an export is written."""
    return out_path + ".json"


def _exporter():
    """(jax2onnx.to_onnx, onnx), or ExporterMissing saying what to install."""
    try:
        import onnx
        from jax2onnx import to_onnx
    except ImportError as e:
        raise ExporterMissing(f"ONNX export needs jax2onnx and onnx ({e}): {_INSTALL}") from None
    return to_onnx, onnx


def preprocessing(config) -> dict:
    """What the host does to an image before the model, and what the graph does itself."""
    from dnc_jax.data.views import augment

    side, resize = config.augment.image_size, augment.eval_resize_size(config.augment)
    normalization = defaults.filled(config.augment, "augment").normalization
    mean, std = augment.normalization_constants(normalization)
    return {
        "host": (f"RGB image (PIL .convert('RGB')) -> Resize({resize}) of the shorter side "
                 f"(the longer one to int({resize} * long / short), PIL bilinear, as "
                 f"torchvision) -> "
                 f"CenterCrop({side}) at offsets int(round((side - {side}) / 2)) -> uint8 "
                 f"[{side}, {side}, 3]; dnc_jax.data.views.host_views.eval_view does exactly this"),
        "resize_shorter_side": resize,
        "center_crop": side,
        "interpolation": "bilinear (PIL Image.BILINEAR, torchvision's Resize default)",
        "graph": ("(x - 255 * mean) / (255 * std) per RGB channel, the network in float32, "
                  "then the learner blocks separately L2-normalised and concatenated"),
        "mean": list(mean),
        "std": list(std),
    }


def describe(config, batch_size, slices, embed_fn, workdir: str, out_path: str) -> dict:
    """The JSON-able description of an export: input, output, preprocessing, provenance."""
    side, dim = config.augment.image_size, np.shape(slices)[1]
    blocks = int(np.any(np.asarray(slices) != 0, axis=1).sum())  # all-zero rows: no block
    batch = BATCH_DIM if batch_size is None else int(batch_size)
    return {
        "path": os.path.abspath(out_path),
        "input": {"name": INPUT_NAME, "shape": [batch, side, side, 3], "dtype": "uint8",
                  "layout": "NHWC, RGB, values 0..255: the eval view, cut on the host"},
        "output": {"name": OUTPUT_NAME, "shape": [batch, dim], "dtype": "float32"},
        "preprocessing": preprocessing(config),
        "compute_dtype": "float32",
        "trained_dtype": config.dtype,
        "workdir": os.path.abspath(workdir),
        "checkpoint": {"dir": embed_fn.checkpoint_dir, "step": int(embed_fn.step),
                       "epoch": int(embed_fn.epoch), "complete": bool(embed_fn.complete)},
        # The learner blocks are those of the checkpoint's epoch (restore.load_trained).
        "slices": {"epoch": int(embed_fn.epoch), "step": int(embed_fn.step),
                   "blocks": blocks},
    }


def model_doc(description: dict) -> str:
    """What to feed the model and what it returns: its doc_string, and what the command prints."""
    inp, out, pre = description["input"], description["output"], description["preprocessing"]
    ckpt = description["checkpoint"]
    return "\n".join([
        "dnc_jax evaluation embedder: eval view in, embedding out",
        (f"  weights: checkpoint step {ckpt['step']}, epoch {ckpt['epoch']}; network in "
         f"float32 (trained in {description['trained_dtype']})"),
        f"  input  {inp['name']}: {inp['dtype']} {inp['shape']} {inp['layout']}",
        f"  host preprocessing: {pre['host']}",
        f"  in the graph: {pre['graph']}",
        f"  output {out['name']}: {out['dtype']} {out['shape']}",
    ])


def summary(description: dict) -> str:
    """The lines the command prints."""
    path = description["path"]
    return (f"wrote {path} (description in {description_path(path)}, exported in "
            f"{description['export_seconds']} s)\n{model_doc(description)}")


def _exportable_max_pool(exporter_max_pool):
    """`flax.linen.max_pool` with explicit padding pairs as an explicit -inf pad, then 'VALID'.

    jax2onnx's flax.linen max_pool/pool plugins take only padding='SAME' or 'VALID' (and a
    keyword window_shape), and its lax.reduce_window_max lowering pools all four NHWC axes,
    which onnxruntime rejects ("Unsupported pooling size"). The ImageNet stem pools 3x3/2 with
    ((1, 1), (1, 1)), which is not 'SAME' for even sizes; padding with max's identity (-inf,
    what flax pads with) and pooling 'VALID' is the same function and exports as one MaxPool.
    """
    import jax.numpy as jnp

    def max_pool(x, window_shape, strides=None, padding="VALID"):
        if not isinstance(padding, str):
            pads = ((0, 0), *(tuple(p) for p in padding), (0, 0))
            x = jnp.pad(x, pads, constant_values=-jnp.inf)
            padding = "VALID"
        return exporter_max_pool(x, window_shape=tuple(window_shape), strides=strides,
                                 padding=padding)

    return max_pool


@contextlib.contextmanager
def _exportable_pooling():
    """Swaps `_exportable_max_pool` in while the exporter traces (its own max_pool inside)."""
    import flax.linen

    exporter_max_pool = flax.linen.max_pool   # jax2onnx's, patched in for the trace
    flax.linen.max_pool = _exportable_max_pool(exporter_max_pool)
    try:
        yield
    finally:
        flax.linen.max_pool = exporter_max_pool


def embedder_function(trained):
    """`views uint8 [N, S, S, 3] -> embedding float32 [N, d]`, the weights as constants.

    Training's own embedding step (`embedding.make_embed_step`, host_cut: normalise, network,
    sliced output) on a float32 copy of the network, so the graph computes what
    `embed_fn.embed_views` computes, in float32 whatever the run's `dtype`.
    """
    import jax.numpy as jnp

    from dnc_jax.inference import embedding
    from dnc_jax.models.embedder import make_embedder

    model = make_embedder(trained.config.model, jnp.float32)
    step = embedding.make_embed_step(model, trained.config.augment, host_cut=True)
    slices = jnp.asarray(trained.slices, jnp.float32)

    def embed(views):
        with _exportable_pooling():
            out = step(trained.model_params, trained.batch_stats, views, None, slices)
        return out[OUTPUT_NAME]

    return embed


def _convert(to_onnx, fn, side: int, batch_size):
    """The ONNX ModelProto of `fn` on uint8 [batch, side, side, 3] views."""
    import jax
    import jax.numpy as jnp

    batch = BATCH_DIM if batch_size is None else int(batch_size)
    spec = jax.ShapeDtypeStruct((batch, side, side, 3), jnp.uint8)
    # jax2onnx logs a warning with a traceback for each example plugin whose optional package
    # (equinox, dm_pix) is absent; none of them is used here.
    plugin_log = logging.getLogger("jax2onnx.plugins.plugin_system")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        proto = to_onnx(fn, [spec], model_name="dnc_jax_embedder", input_names=[INPUT_NAME],
                        output_names=[OUTPUT_NAME])
    finally:
        plugin_log.setLevel(level)
    # jax2onnx stamps NHWC shapes on values its plugins compute in NCHW; onnxruntime warns of
    # each and infers its own. The annotations are optional: leave inference to the runtime.
    del proto.graph.value_info[:]
    return proto


def _annotate(onnx, proto, description: dict) -> None:
    """The description into the model itself: doc_string and metadata_props."""
    proto.doc_string = model_doc(description)
    props = {"dnc_jax.input": json.dumps(description["input"]),
             "dnc_jax.output": json.dumps(description["output"]),
             "dnc_jax.preprocessing": json.dumps(description["preprocessing"]),
             "dnc_jax.checkpoint": json.dumps(description["checkpoint"])}
    onnx.helper.set_model_props(proto, props)


def _write(onnx, proto, description: dict, out_path: str) -> None:
    """Both files, each written beside and renamed: an interrupted export leaves no model that
    would be taken for a complete one."""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    partial = out_path + ".partial"
    onnx.save(proto, partial)
    with open(partial + ".json", "w") as f:
        json.dump(description, f, indent=2)
        f.write("\n")
    os.replace(partial + ".json", description_path(out_path))
    os.replace(partial, out_path)


def export_onnx(workdir: str, out_path: str, batch_size=None) -> dict:
    """Exports the run in `workdir` to `out_path` (+ `.json`); returns the description written.

    `batch_size`: a fixed batch size, else (None) a dynamic batch dimension N. Raises
    RestoreError (one line) for a folder that is not a run or has no checkpoint, and
    ExporterMissing without jax2onnx.
    """
    from dnc_jax.inference.restore import load_trained

    to_onnx, onnx = _exporter()
    if batch_size is not None and batch_size < 1:
        raise ExportError(f"--batch_size={batch_size}: must be at least 1 (or unset: dynamic)")
    trained = load_trained(workdir)
    try:
        start = time.perf_counter()
        proto = _convert(to_onnx, embedder_function(trained), trained.config.augment.image_size,
                         batch_size)
        onnx.checker.check_model(proto)
        description = describe(trained.config, batch_size, trained.slices, trained.embed_fn,
                               workdir, out_path)
        description["export_seconds"] = round(time.perf_counter() - start, 2)
        _annotate(onnx, proto, description)
        _write(onnx, proto, description, out_path)
    finally:
        trained.embed_fn.close()
    return description


def main():
    FLAGS = flags.FLAGS
    description = export_onnx(FLAGS.workdir, FLAGS.out, FLAGS.batch_size)
    print(summary(description), flush=True)


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
