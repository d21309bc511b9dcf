"""Train-step throughput of the embedding network, as images per second.

    python bench/train_step.py --model=resnet50 --batch=640 --image_size=224 --dtype=bfloat16
    python bench/train_step.py --model=vit_s16 --batch=640 --dtype=bfloat16   # configs/vit/

Times the real jitted train step (augmentation, forward, margin loss over K learners, backward,
Adam) on random uint8 images after a warm-up, and prints one Markdown table row with the device
name, for BENCHMARKS.md. `--input=views` (the default) feeds what training on image files
feeds: crops already cut on the host at the network's size, only flipped and normalised in the
step; `--input=rows` feeds 256 px rows cropped on the device (the glyph arrays' path).
`--embed` times the embedding pass instead (eval views, forward only, embedding + features to
the host), the pass that precedes every reclustering and evaluation.

    python bench/train_step.py --model=resnet50 --batch=256 --embed   # bench/scaling.py's rate

`--backbone` times several backbones in turn, each with its configs' keys and optimiser
(`resnet50`: configs/sop.py's; `convnext_tiny`: the same around timm's ConvNeXt-T; the ViTs:
configs/vit/_recipe.py's table, e.g. `dinov2_b14_reg4`), random weights, one row each and a last
column with its time per step over ResNet-50's in the same command (ResNet-50 runs first when
listed). `--backbone=all` is every one:

    python bench/train_step.py --backbone=all --schedule=round_robin --batch=80
    python bench/train_step.py --backbone=resnet50,dinov2_s14,clip_b16 --embed

`--schedule` picks how learners share the steps: `joint` (the default) splits every batch among
the K learners; `round_robin` gives each batch to one learner, learners taking turns, one call
a step; `fused` is round robin with a round of K steps in one compiled call
(`steps.make_multi_step`; `fused_unrolled` the same with the scan unrolled). The papers'
schedule at their batch, and joint at K times it:

    python bench/train_step.py --schedule=round_robin --batch=80
    python bench/train_step.py --schedule=fused --batch=80
    python bench/train_step.py --schedule=joint --batch=640

The last columns are the FLOPs of an image (2 x the multiply-adds of the step's or the pass's
convolutions and matrix products, counted from its jaxpr by bench/flops.py: XLA's cost
analysis misses the cuDNN convolutions on a GPU), the rate achieved and, with
`--peak_tflops` (H200 dense: 989 bfloat16, 495 TF32), its fraction of the device's peak.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnc_jax.configs import default  # noqa: E402
from dnc_jax.inference import embedding  # noqa: E402
from dnc_jax.training import optim, steps
from dnc_jax import parallel
from dnc_jax.divide import masks  # noqa: E402
from dnc_jax.divide import schedule  # noqa: E402
from dnc_jax.losses import make_loss  # noqa: E402
from dnc_jax.configs.vit import _recipe as vit_recipe  # noqa: E402
from dnc_jax.models import vit  # noqa: E402
from dnc_jax.models.embedder import check_model_config, make_embedder  # noqa: E402
from dnc_jax.models.variables import initial_variables  # noqa: E402
from flops import jaxpr_flops  # noqa: E402 - bench/flops.py (this script's folder)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=640)  # the configs: 8 learners x 80
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--cache_size", type=int, default=256)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--learners", type=int, default=8)
    p.add_argument("--schedule", default="joint",
                   choices=["joint", "round_robin", "fused", "fused_unrolled"],
                   help="joint: every batch split among the learners; round_robin: one "
                        "learner a batch, one call a step; fused: a round of K steps a call "
                        "(a scan); fused_unrolled: the same call with the scan unrolled")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--input", default="views", choices=["views", "rows"],
                   help="views: host-cut crops (image files); rows: 256 px rows cropped on "
                        "the device (arrays)")
    p.add_argument("--embed", action="store_true",
                   help="time the embedding pass (eval, forward only) instead of the step")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="the device's peak TFLOP/s at --dtype, for the fraction achieved "
                        "(H200 dense: 989 bfloat16, 495 TF32)")
    p.add_argument("--backbone", default="",
                   help=f"time these backbones in turn, comma-separated, instead of --model: "
                        f"{', '.join(BACKBONES)}, or all")
    args = p.parse_args()
    if not args.backbone:
        config = default.get_config()
        if vit.is_vit(args.model):  # a ViT trains with the ViT configs' optimiser (AdamW, ...)
            vit_recipe.apply(config, train_images=59551)
        config.model.name = args.model
        return measure(args, config, args.model)
    names = list(BACKBONES) if args.backbone == "all" else args.backbone.split(",")
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        p.error(f"--backbone: unknown {', '.join(unknown)}; one of {', '.join(BACKBONES)}, all")
    names.sort(key=lambda n: n != "resnet50")  # the reference first (a stable sort)
    print("| device | backbone (model.name) | dtype | batch | px | input | time/step | images/s "
          "| first call (compile) | GFLOP/image | TFLOP/s | of peak | time / ResNet-50's |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    reference = None
    for name in names:
        config = backbone_config(name)
        is_reference = name == "resnet50"
        per_step = measure(args, config, f"{name} ({config.model.name})",
                           None if is_reference else reference, is_reference)
        if is_reference:
            reference = per_step
        jax.clear_caches()  # one backbone's executables are not kept for the next


# The backbones --backbone times: the papers' ResNet-50, the ViTs of configs/vit/ (each with its
# keys and optimiser), and timm's ConvNeXt-T.
BACKBONES = ("resnet50", *vit_recipe.BACKBONES, "convnext_tiny")


def backbone_config(name: str):
    """The config a run of backbone `name` trains with: configs/sop.py's, with
    configs/vit/_recipe.py applied for a ViT, model.name set for the ConvNeXt."""
    config = default.get_config()
    if name in vit_recipe.BACKBONES:
        return vit_recipe.apply(config, train_images=59551, backbone_name=name)
    config.model.name = name
    return config


def measure(args, config, label: str, reference: float | None = None,
            is_reference: bool = False) -> float:
    """Prints the Markdown row of `config`'s train step (or embedding pass with --embed),
    named `label`; returns its seconds a step (a batch). With --backbone a last column gives
    the ratio to `reference`, ResNet-50's seconds in this command (1.00 for ResNet-50 itself,
    `is_reference`; '-' without one)."""
    config.model.pretrained = ""
    config.augment.image_size = args.image_size
    check_model_config(config.model, args.image_size)
    mesh = parallel.make_mesh()
    model = make_embedder(config.model, jnp.dtype(args.dtype).type)
    if args.embed:
        return embed_pass(args, config, model, mesh, label, reference, is_reference)
    optimizer = optim.make_optimizer(config.optim)
    loss_fn = make_loss(config.loss, args.learners, config.data.samples_per_class)
    one_step = steps.make_train_step(model, optimizer, loss_fn, config.augment)
    if args.schedule.startswith("fused"):
        multi_fn = steps.make_multi_step(one_step, unroll=args.schedule == "fused_unrolled")
        multi = jax.jit(multi_fn, donate_argnums=(0,))
        k = args.learners

        def step(state, batches, phase, key):  # one round of K learner steps
            return multi(state, tuple(batches), phase, key)

        def call_flops(state, batches, phase, key):
            return jaxpr_flops(multi_fn, state, tuple(batches), phase, key)
    else:
        single = jax.jit(one_step, donate_argnums=(0,))
        k = 1

        def step(state, batches, phase, key):
            return single(state, batches[0], phase, key)

        def call_flops(state, batches, phase, key):
            return jaxpr_flops(one_step, state, batches[0], phase, key)
    params, stats = initial_variables(model, config.model, args.learners, jax.random.key(0),
                                      args.image_size)
    state = parallel.put_replicated(
        steps.create_train_state({"model": params}, stats, optimizer), mesh)

    b, m = args.batch, config.data.samples_per_class
    rng = np.random.default_rng(0)
    if args.input == "views":
        pixels = {"views": rng.integers(0, 256, (b, args.image_size, args.image_size, 3),
                                        np.uint8)}
    else:
        pixels = {"images": rng.integers(0, 256, (b, args.cache_size, args.cache_size, 3),
                                         np.uint8),
                  "sizes": np.tile(np.array([[375, 500]], np.int32), (b, 1))}

    def batch_of(learners):
        return parallel.put_batch({
            **pixels,
            "labels": np.repeat(np.arange(b // m), m).astype(np.int32),
            "learners": learners.astype(np.int32),
            "valid": np.ones(b, bool),
        }, mesh)

    if args.schedule == "joint":
        rounds = [[batch_of(np.arange(b) * args.learners // b)]]
    else:  # each batch one learner's; K batches, one per learner, in turn
        per_learner = [batch_of(np.full(b, learner)) for learner in range(args.learners)]
        rounds = [per_learner[i:i + k] for i in range(0, args.learners, k)]
    config.divide.num_learners = args.learners
    phase = parallel.put_replicated(
        masks.phase_arrays(config, schedule.phase(config.divide, 0)), mesh)
    key = jax.random.key(1)
    flops_per_image = call_flops(state, rounds[0], phase, key) / (k * b)  # traced, not run

    t0 = time.perf_counter()
    state, metrics = step(state, rounds[0], phase, key)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    for i in range(2):
        state, metrics = step(state, rounds[i % len(rounds)], phase, key)
    jax.block_until_ready(metrics)
    calls = max(1, args.steps // k)
    t0 = time.perf_counter()
    for i in range(calls):
        state, metrics = step(state, rounds[i % len(rounds)], phase, key)
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - t0) / (calls * k)
    device = jax.devices()[0].device_kind
    print(f"| {device} x{jax.device_count()} | {label} | {args.dtype} | {b} | "
          f"{args.image_size} | {args.input}, {args.schedule} | {per_step * 1e3:.1f} ms | "
          f"{b / per_step:.0f} | {compile_s:.1f} s | "
          f"{flops_columns(args, flops_per_image, b / per_step)}"
          f"{ratio_column(args, per_step, per_step if is_reference else reference)}",
          flush=True)
    return per_step


def ratio_column(args, seconds: float, reference: float | None) -> str:
    """With --backbone, the last column: `seconds` over ResNet-50's in this command."""
    if not args.backbone:
        return ""
    return f" {seconds / reference:.2f} |" if reference else " - |"


def embed_pass(args, config, model, mesh, label, reference=None, is_reference=False):
    """Images/s of the embedding pass (`EmbeddingPass.views`: the evaluation's pass, embeddings
    fetched one batch late) over `--steps` batches of host-cut eval views."""
    params, stats = initial_variables(model, config.model, args.learners, jax.random.key(0),
                                      args.image_size)
    config.divide.num_learners = args.learners
    slices = masks.phase_arrays(config, schedule.phase(config.divide, 0))["slices"]
    pass_ = embedding.EmbeddingPass(model, config, mesh, batch_size=args.batch)
    views = np.random.default_rng(0).integers(
        0, 256, (args.steps * args.batch, args.image_size, args.image_size, 3), np.uint8)
    step = embedding.make_embed_step(model, config.augment, host_cut=True)
    flops_per_image = jaxpr_flops(step, params, stats, views[:args.batch], None,
                                  np.asarray(slices)) / args.batch
    t0 = time.perf_counter()
    pass_.views((params, stats), views[:args.batch], slices)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pass_.views((params, stats), views, slices)
    per_batch = (time.perf_counter() - t0) / args.steps
    device = jax.devices()[0].device_kind
    print(f"| {device} x{jax.device_count()} | {label} | {args.dtype} | {args.batch} | "
          f"{args.image_size} | embedding pass | {per_batch * 1e3:.1f} ms | "
          f"{args.batch / per_batch:.0f} | {compile_s:.1f} s | "
          f"{flops_columns(args, flops_per_image, args.batch / per_batch)}"
          f"{ratio_column(args, per_batch, per_batch if is_reference else reference)}",
          flush=True)
    return per_batch


def flops_columns(args, flops_per_image, images_per_s):
    """GFLOP/image | TFLOP/s achieved | fraction of --peak_tflops ('-' without one) |"""
    achieved = flops_per_image * images_per_s / 1e12
    peak = f"{achieved / args.peak_tflops:.1%}" if args.peak_tflops else "-"
    return f"{flops_per_image / 1e9:.2f} | {achieved:.2f} | {peak} |"

if __name__ == "__main__":
    main()
