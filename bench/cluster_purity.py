"""Does k-means on a model's features keep classes together? The premise of dividing, measured.

For each trained run (and, with --untrained, the same network at its random initialisation,
which is what a from-scratch run clusters before epoch 0), embeds the run's training classes
with the eval transform, runs k-means into K clusters on the L2-normalised pooled features
(what reclustering uses by default) and on the embedding, and prints a markdown row per case:

- class purity: the share of a class's images that its majority cluster holds, averaged over
  classes (1.0: every class whole in one cluster; 1/K: spread evenly);
- super-class purity, for data sets that name super-classes (the glyph 'scripts' blocks): the
  same share for each super-class;
- positive pairs kept: the share of same-class image pairs whose two images share a cluster,
  the pairs a learner can still train on.

    python bench/cluster_purity.py runs/accuracy/runs/K1/seed0 --k=4 --untrained
"""
from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402


def purity(assignment, groups) -> float:
    from dnc_jax.divide.recluster import class_purity

    return class_purity(assignment, groups)


def positive_pairs_kept(assignment, labels) -> float:
    labels, assignment = np.asarray(labels), np.asarray(assignment)
    kept = total = 0
    for c in np.unique(labels):
        a = assignment[labels == c]
        n = len(a)
        total += n * (n - 1)
        kept += sum(int(m) * (int(m) - 1) for m in np.bincount(a[a >= 0]))
    return kept / max(total, 1)


def _super_classes(config, image_set):
    """Per-image super-class names where the data set has them (the glyph sets built from
    blocks: 'scripts', 'pretrain'), else None."""
    if config.data.name != "glyphs" or config.data.glyphs.classes == "letters":
        return None
    from dnc_jax.data.sources import glyph_classes

    return np.asarray([glyph_classes.super_class(image_set.class_names[label],
                                                 config.data.glyphs.classes)
                       for label in image_set.labels])


def _embed(model, config, variables, image_set):
    import jax
    import jax.numpy as jnp

    from dnc_jax.inference import embedding
    from dnc_jax.divide import masks
    from dnc_jax.divide import schedule

    step = jax.jit(embedding.make_embed_step(model, config.augment))
    slices = masks.phase_arrays(config, schedule.phase(config.divide, 0))["slices"]
    outs = {"features": [], "embedding": []}
    b, n = 256, len(image_set.labels)
    for start in range(0, n, b):
        rows = np.minimum(np.arange(start, start + b), n - 1)
        sizes = None if image_set.sizes is None else jnp.asarray(image_set.sizes[rows])
        out = step(variables["params"], variables["batch_stats"],
                   jnp.asarray(image_set.images[rows]), sizes, jnp.asarray(slices))
        for key in outs:
            outs[key].append(np.asarray(out[key]))
    return {key: np.concatenate(v)[:n] for key, v in outs.items()}


def rows_for(workdir, k, untrained, restarts, seed):
    import jax

    from dnc_jax.data import sources
    from dnc_jax.divide import recluster
    from dnc_jax.models.variables import initial_variables
    from dnc_jax.inference.restore import load_trained

    trained = load_trained(workdir)
    config = trained.config
    train_set = sources.load_dataset(config.data)["train"]
    supers = _super_classes(config, train_set)
    cases = [("trained (last epoch)", {"params": trained.model_params,
                                       "batch_stats": trained.batch_stats})]
    if untrained:
        # The key train.py initialises the model with: split(split(key(seed), 3)[0], 3)[0].
        init_key = jax.random.split(jax.random.split(jax.random.key(config.seed), 3)[0], 3)[0]
        params, stats = initial_variables(trained.model, config.model,
                                          config.divide.num_learners, init_key,
                                          config.augment.image_size)
        cases.insert(0, ("untrained (its seed's init)", {"params": params, "batch_stats": stats}))
    name = f"{config.data.name}" + (f" ({config.data.glyphs.get('classes', 'letters')})"
                                    if config.data.name == "glyphs" else "")
    rows = []
    for label, variables in cases:
        x = _embed(trained.model, config, variables, train_set)
        for space in ("features", "embedding"):
            assignment, _ = recluster.flat_kmeans(
                jax.numpy.asarray(x[space]), k, train_set.labels, jax.random.key(seed),
                restarts=restarts, init="kmeans++")
            sizes = np.bincount(assignment, minlength=k)
            rows.append(
                f"| {name} | {workdir} | {label} | {space} | {k} | "
                f"{100 * purity(assignment, train_set.labels):.1f}% | "
                + (f"{100 * purity(assignment, supers):.1f}%" if supers is not None else "—")
                + f" | {100 * positive_pairs_kept(assignment, train_set.labels):.1f}% | "
                f"{sizes.max()} / {sizes.min()} |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", help="trained run folders")
    parser.add_argument("--k", type=int, default=4, help="clusters")
    parser.add_argument("--untrained", action="store_true",
                        help="also the network at its initialisation")
    parser.add_argument("--restarts", type=int, default=4, help="k-means restarts")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed")
    args = parser.parse_args(argv)
    print(f"k-means (k-means++, {args.restarts} restarts) on the training classes, K={args.k}, "
          f"1/K = {100 / args.k:.0f}%.\n")
    print("| data | run | network | clustered on | K | class purity | super-class purity | "
          "positive pairs kept | largest / smallest cluster |")
    print("|---|---|---|---|---|---|---|---|---|")
    for workdir in args.workdirs:
        for row in rows_for(workdir, args.k, args.untrained, args.restarts, args.seed):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
