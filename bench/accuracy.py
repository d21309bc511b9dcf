"""Does Divide and Conquer beat its own K=1 baseline, and does 'joint' train as well as round robin?

One command trains the same backbone, loss and data under a grid of settings, for several seeds
each, and writes a markdown table (last-epoch R@1, R@4, MAP@R, NMI: mean and std over seeds;
images trained on; wall time) and a plot (R@1 per epoch, one line per setting, seeds shaded):

    python bench/accuracy.py                          # the glyph demo set, offline (CPU: ~2 h)
    python bench/accuracy.py --grid=investigate       # K=4 variants: warm-up, interval, ...
    python bench/accuracy.py --config=configs/demo_vit.py --grid=vit_optim --epochs=10
    python bench/accuracy.py --set data.name=folder --set data.root=/data/mine
    python bench/accuracy.py --gpu_command            # prints the full-size GPU command

The grid is built from a base config (`--config`, default configs/demo.py). Its per-learner
batch b (its batch_size / K under 'joint', its batch_size under 'round_robin') is kept for
every setting: K=k under 'joint' trains batches of k x b, under 'round_robin' batches of b,
so every learner step sees the same number of images and every setting sees every usable image
once an epoch. `--epochs=E` compresses the base's phase plan (the full-embedding and finetune
epochs scale with E); `--epochs=0` keeps the config's own.

Each run is `python -m dnc_jax.main` in its own process and workdir (OUT/runs/SETTING/seedS),
so any run can be repeated alone with the command written beside it (`command.txt`). A run
whose `summary.json` exists is not run again: a killed bench, started again, goes on where it
stopped. Runs share a persistent XLA compilation cache (OUT/xla_cache).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    overrides: dict   # config key -> value, on top of the base config


def _base_config(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_base_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def per_learner_batch(base) -> int:
    if base.divide.learner_schedule == "joint":
        return base.data.batch_size // base.divide.num_learners
    return base.data.batch_size


def phase_epochs(base, epochs: int) -> dict:
    """The base's phase plan compressed to `epochs` (0: as the config has it)."""
    if epochs <= 0:
        return {}
    scale = epochs / base.num_epochs

    def scaled(epoch):
        return -1 if epoch < 0 else max(1, round(epoch * scale))

    return {"num_epochs": epochs,
            "divide.full_embedding_epoch": scaled(base.divide.full_embedding_epoch),
            "divide.finetune_epoch": scaled(base.divide.finetune_epoch)}


def _cvpr(k, schedule, rule, b, **extra):
    batch = k * b if schedule == "joint" else b
    # The papers' plan (clustered at epoch 0) whatever the base config's warm-up.
    out = {"divide.schedule": "cvpr", "divide.masks": "slices", "divide.num_learners": k,
           "divide.learner_schedule": schedule, "optim.joint_lr_rule": rule,
           "data.batch_size": batch, "divide.warmup_epochs": 0}
    out.update(extra)
    return out


def _pami(k, masks, schedule, rule, b, **extra):
    out = _cvpr(k, schedule, rule, b, **extra)
    out.update({"divide.schedule": "pami", "divide.masks": masks, "divide.finetune_epoch": -1,
                "divide.freeze_epochs": 1})
    return out


# LAMB: AdamW with the layer-wise trust ratio; its rate is a relative step of each layer, so it
# starts from its own (LAMB papers fine-tune at 1e-3 and above), the sweep scaling it as others.
LAMB = {"optim.algorithm": "adamw", "optim.trust_ratio": True,
        "optim.backbone.learning_rate": 1e-3, "optim.head.learning_rate": 1e-3}


def _train_images(base) -> int:
    """Training images of the base config's data, for a warm-up of about two joint epochs;
    the glyph demo's count when the data is elsewhere (a warm-up length, not a measurement:
    reading a benchmark's lists here would cost a pass over its files)."""
    if base.data.name != "glyphs":
        return 2400
    from dnc_jax.data import sources

    return len(sources.load_dataset(base.data)["train"].labels)


def _label(schedule, rule):
    return "round_robin" if schedule == "round_robin" else f"joint, lr rule {rule}"


def grid(name: str, base) -> list[Setting]:
    """The settings of a named grid."""
    b = per_learner_batch(base)
    k_base = base.divide.num_learners
    settings = []
    if name in ("main", "smoke", "demo"):
        settings.append(Setting("K1", _cvpr(1, "round_robin", "none", b)))
    if name == "main":
        settings.append(Setting(f"K1-batch{k_base * b}",
                                _cvpr(1, "round_robin", "none", k_base * b)))
        for k in (2, 4, 8):
            for schedule, rule in (("round_robin", "none"), ("joint", "none"),
                                   ("joint", "linear")):
                tag = "rr" if schedule == "round_robin" else f"joint-{rule}"
                settings.append(Setting(f"cvpr-K{k}-{tag}", _cvpr(k, schedule, rule, b)))
        for masks in ("learned", "fixed"):
            for schedule, rule in (("round_robin", "none"), ("joint", "none"),
                                   ("joint", "linear")):
                tag = "rr" if schedule == "round_robin" else f"joint-{rule}"
                settings.append(Setting(f"pami-{masks}-K{k_base}-{tag}",
                                        _pami(k_base, masks, schedule, rule, b)))
    elif name == "smoke":
        settings.append(Setting("cvpr-K2-joint-linear", _cvpr(2, "joint", "linear", b)))
    elif name == "demo":
        settings.append(Setting(f"cvpr-K{k_base}-demo", {"divide.num_learners": k_base}))
        # The demo's own batch: as many steps an epoch as its K-learner joint run.
        settings[0] = Setting("K1", {"divide.num_learners": 1})
    elif name == "investigate":
        # One thing changed at a time from the K-learner round-robin run of the main grid
        # (same names: runs of both grids in one --out are shared, never repeated).
        k = k_base
        settings.append(Setting("K1", _cvpr(1, "round_robin", "none", b)))
        variants = {
            "": {},
            "-recluster-every-1": {"divide.recluster_every": 1},
            "-warmup-2": {"divide.warmup_epochs": 2},
            "-cluster-on-embedding": {"divide.cluster_on": "embedding"},
        }
        for vname, extra in variants.items():
            settings.append(Setting(f"cvpr-K{k}-rr{vname}",
                                    _cvpr(k, "round_robin", "none", b, **extra)))
    elif name == "finetune":
        # From a pretrained backbone (--pretrained): the schedules, the PAMI masks and the
        # large-batch remedies of 'joint' (a warm-up; LAMB's layer-wise trust ratio).
        settings.append(Setting("K1", _cvpr(1, "round_robin", "none", b)))
        for k in (2, 4, 8):
            settings.append(Setting(f"cvpr-K{k}-rr", _cvpr(k, "round_robin", "none", b)))
        for masks in ("learned", "fixed"):
            settings.append(Setting(f"pami-{masks}-K{k_base}-rr",
                                    _pami(k_base, masks, "round_robin", "none", b)))
        for k in (k_base, 2 * k_base):
            for rule in ("none", "sqrt", "linear"):
                settings.append(Setting(f"cvpr-K{k}-joint-{rule}", _cvpr(k, "joint", rule, b)))
        steps = max(1, round(_train_images(base) / (k_base * b)))  # a joint epoch's steps
        settings.append(Setting(f"cvpr-K{k_base}-joint-linear-warmup",
                                _cvpr(k_base, "joint", "linear", b,
                                      **{"optim.warmup_steps": 2 * steps})))
        settings.append(Setting(f"cvpr-K{k_base}-joint-linear-lamb",
                                _cvpr(k_base, "joint", "linear", b, **LAMB)))
    elif name == "vit_optim":
        # The transformer optimiser options of configs/demo_vit.py, one taken away at a time,
        # and its K=1 baseline (run with --config=configs/demo_vit.py).
        settings.append(Setting("vit", {}))
        settings.append(Setting("vit-adam-coupled", {
            "optim.algorithm": "adam_coupled", "optim.no_decay_1d": False,
            "optim.backbone.weight_decay": 1e-5, "optim.head.weight_decay": 1e-5}))
        settings.append(Setting("vit-no-warmup", {"optim.warmup_steps": 0}))
        settings.append(Setting("vit-no-clip", {"optim.clip_grad_norm": 0.0}))
        settings.append(Setting("vit-K1", {"divide.num_learners": 1}))
    else:
        raise SystemExit(f"bench/accuracy.py: unknown --grid={name!r} "
                         f"(main | investigate | demo | smoke | finetune | vit_optim)")
    return settings


# -- running ---------------------------------------------------------------------------------

def _flag(key, value):
    if isinstance(value, bool):
        value = str(value)
    elif isinstance(value, (tuple, list)):
        value = "(" + ",".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    return f"--config.{key}={value}"


def run_command(config_path, workdir, seed, overrides, user_sets) -> list[str]:
    cmd = [sys.executable, "-m", "dnc_jax.main", f"--config={config_path}",
           f"--workdir={workdir}", f"--config.seed={seed}", "--config.progress=False",
           # Only the last epoch is saved: the bench reads metrics, not weights.
           "--config.checkpoint.every_epochs=100000",
           "--config.checkpoint.keep_best_on_test=False", "--config.eval.nmi=True"]
    cmd += [_flag(k, v) for k, v in overrides.items()]
    cmd += [f"--config.{s}" for s in user_sets]
    return cmd


def _run_one(cmd, workdir, env) -> dict:
    summary = os.path.join(workdir, "summary.json")
    if os.path.exists(summary):
        return {"skipped": True}
    if os.path.exists(workdir):  # a run killed before its end: start it again from scratch
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    with open(os.path.join(workdir, "command.txt"), "w") as f:
        f.write(shlex.join(cmd) + "\n")
    t0 = time.time()
    with open(os.path.join(workdir, "log.txt"), "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    seconds = time.time() - t0
    with open(os.path.join(workdir, "wall_seconds.txt"), "w") as f:
        f.write(f"{seconds:.1f}\n")
    if rc != 0 or not os.path.exists(summary):
        tail = open(os.path.join(workdir, "log.txt")).read().strip().splitlines()[-3:]
        raise RuntimeError(f"run {workdir} failed (exit {rc}): " + " | ".join(tail))
    return {"seconds": seconds}


def read_run(workdir) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    trained = [r for r in records if r.get("epoch", -1) >= 0]
    last = trained[-1]
    with open(os.path.join(workdir, "wall_seconds.txt")) as f:
        seconds = float(f.read())
    purity = [r["class_purity"] for r in trained if "class_purity" in r]
    return {
        "r1": last["recall@1"], "r4": last.get("recall@4", float("nan")),
        "map_r": last.get("map@r", float("nan")), "nmi": last.get("nmi", float("nan")),
        "images": sum(r.get("images", 0) for r in trained),
        "steps": sum(r.get("steps", 0) for r in trained),
        "seconds": seconds,
        "curve": [(r["epoch"], r["recall@1"]) for r in records if "recall@1" in r],
        "first_purity": purity[0] if purity else float("nan"),
        "last_purity": purity[-1] if purity else float("nan"),
        "finite": all(math.isfinite(r.get("loss", 0.0)) for r in trained),
        "clusterings": [_clustering(r) for r in trained if "cluster_sizes" in r
                        and len(r["cluster_sizes"]) > 1],
        "divided": [_divided(r) for r in trained
                    if r.get("num_learners", 1) > 1 and not r.get("full_embedding")],
    }


def _clustering(record) -> dict:
    sizes = np.asarray(record["cluster_sizes"], np.float64)
    classes = np.asarray(record["cluster_classes"], np.float64)
    return {"epoch": record["epoch"], "purity": record.get("class_purity", float("nan")),
            "size_ratio": sizes.max() / max(sizes.min(), 1.0),
            "classes_per_cluster": float(classes.mean()),
            # The matching cost is a symmetric difference: a moved image counts twice.
            "moved": record.get("matching_cost", float("nan")) / max(2 * sizes.sum(), 1.0)}


def _divided(record) -> dict:
    losses = np.asarray(record["loss_per_learner"], np.float64)
    return {"epoch": record["epoch"], "loss_spread": losses.max() - losses.min(),
            "loss_mean": losses.mean(),
            "mask_overlap": record.get("orthogonality", float("nan"))}


def sweep_points(spec: str) -> list[tuple[float, int]]:
    """[(rate multiplier, batch multiplier)] of `--sweep` ('' : the setting as it is)."""
    if not spec:
        return [(1.0, 1)]
    points = []
    for item in spec.split(","):
        try:
            rate, batch = item.split(":")
            point = (float(rate), int(batch))
        except ValueError:
            point = (0.0, 0)
        if point[0] <= 0 or point[1] < 1:
            raise SystemExit(f"bench/accuracy.py: --sweep={spec}: {item!r} is not RATE:BATCH "
                             f"(a positive rate multiplier, an integer batch multiplier >= 1)")
        points.append(point)
    if len(set(points)) != len(points):
        raise SystemExit(f"bench/accuracy.py: --sweep={spec} names a point twice")
    return points


def point_tag(point) -> str:
    return f"lr{point[0]:g}x-batch{point[1]}x"


def run_dir(out, name, point, seed) -> str:
    parts = [out, "runs", name] + ([point_tag(point)] if point is not None else [])
    return os.path.join(*parts, f"seed{seed}")


def point_overrides(base, overrides, point) -> dict:
    """The config values of a sweep point: the setting's batch and its backbone and head rates
    scaled; a warm-up counted in steps is shortened as the batch grows (same images)."""
    rate, batch = point
    if (rate, batch) == (1.0, 1):
        return {}
    out = {"data.batch_size": int(_effective(base, overrides, "data.batch_size")) * batch}
    for group in ("backbone", "head"):
        key = f"optim.{group}.learning_rate"
        out[key] = float(_effective(base, overrides, key)) * rate
    if "optim.warmup_steps" in overrides:
        out["optim.warmup_steps"] = max(1, overrides["optim.warmup_steps"] // batch)
    return out


def run_all(jobs, parallel, env, t0) -> None:
    with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
        futures = {pool.submit(_run_one, cmd, wd, env): (s, seed, wd) for s, seed, wd, cmd in jobs}
        for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
            s, seed, workdir = futures[future]
            info = future.result()
            what = "done before" if info.get("skipped") else f"{info['seconds']:.0f} s"
            where = os.path.relpath(workdir, os.path.dirname(os.path.dirname(workdir)))
            print(f"  [{n}/{len(jobs)}] {s.name} {where}: {what} "
                  f"({time.time() - t0:.0f} s in all)", flush=True)


def _read_if_done(workdir):
    done = os.path.exists(os.path.join(workdir, "summary.json")) and os.path.exists(
        os.path.join(workdir, "wall_seconds.txt"))
    return read_run(workdir) if done else None


def sweep_table(settings, sweep, chosen, points) -> str:
    lines = ["| setting | " + " | ".join(f"rate ×{r:g}, batch ×{b}" for r, b in points) + " |",
             "|---|" + "---|" * len(points)]
    for s in settings:
        cells = []
        for p in points:
            r = sweep[s.name][p]
            cell = f"{100 * r['r1']:.2f} / {100 * r['map_r']:.2f}"
            cells.append(f"**{cell}**" if p == chosen[s.name] else cell)
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- reporting -------------------------------------------------------------------------------

def _mean_std(values, scale=100.0):
    v = np.asarray(values, np.float64) * scale
    if len(v) == 0 or not np.all(np.isfinite(v)):
        return "n/a"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def _effective(base, overrides, key):
    """A setting's value of a dotted config key: its override, else the base config's."""
    if key in overrides:
        return overrides[key]
    value = base
    for part in key.split("."):
        value = value[part]
    return value


def table(settings, results, base) -> str:
    baseline = results.get(settings[0].name)
    lines = [
        "| setting | schedule | K | batch | rate | R@1 | Δ R@1 vs " + settings[0].name +
        " | R@4 | MAP@R | NMI | class purity (first → last clustering) | images trained | "
        "steps | wall s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        runs = results.get(s.name)
        if not runs:
            continue
        o = {key: _effective(base, s.overrides, key) for key in (
            "divide.learner_schedule", "optim.joint_lr_rule", "divide.schedule",
            "divide.num_learners", "data.batch_size", "optim.backbone.learning_rate")}
        schedule = o["divide.learner_schedule"]
        rule = o["optim.joint_lr_rule"]
        plan = o["divide.schedule"]
        r1 = np.array([r["r1"] for r in runs])
        if baseline and s.name != settings[0].name:
            # Difference of seed means, with the std of that difference (independent seeds).
            b1 = np.array([r["r1"] for r in baseline])
            delta = 100 * (r1.mean() - b1.mean())
            err = 100 * math.sqrt(r1.var(ddof=1) / len(r1) + b1.var(ddof=1) / len(b1)) \
                if len(r1) > 1 and len(b1) > 1 else float("nan")
            delta_s = f"{delta:+.2f}" + (f" ± {err:.2f}" if math.isfinite(err) else "")
        else:
            delta_s = "—"
        purity = "—"
        if any(math.isfinite(r["first_purity"]) for r in runs):
            purity = (f"{100 * np.mean([r['first_purity'] for r in runs]):.0f}% → "
                      f"{100 * np.mean([r['last_purity'] for r in runs]):.0f}%")
        lines.append(
            f"| {s.name} | {plan}, {_label(schedule, rule)} | "
            f"{o['divide.num_learners']} | {o['data.batch_size']} | "
            f"{float(o['optim.backbone.learning_rate']):.0e} | "
            f"{_mean_std(r1)} | {delta_s} | {_mean_std([r['r4'] for r in runs])} | "
            f"{_mean_std([r['map_r'] for r in runs])} | {_mean_std([r['nmi'] for r in runs])} | "
            f"{purity} | {np.mean([r['images'] for r in runs]):,.0f} | "
            f"{np.mean([r['steps'] for r in runs]):,.0f} | "
            f"{np.mean([r['seconds'] for r in runs]):.0f} |")
    return "\n".join(lines)


def diagnostics(settings, results, train_classes) -> str:
    """Per D&C setting, means over seeds: how the clusters look and how the learners train."""
    lines = [
        "| setting | clusterings | class purity: first / mean / last | classes per cluster "
        f"(of {train_classes}) | largest / smallest cluster | images changing learner at a "
        "recluster | per-learner loss: mean, max - min (last divided epoch) | mask overlap |",
        "|---|---|---|---|---|---|---|---|"]
    for s in settings:
        runs = results.get(s.name) or []
        if not runs or not runs[0]["clusterings"]:
            continue

        def mean(key, pick, source="clusterings"):
            values = [pick([c[key] for c in r[source]]) for r in runs if r[source]]
            values = [v for v in values if math.isfinite(v)]
            return float(np.mean(values)) if values else float("nan")

        first = mean("purity", lambda v: v[0])
        avg = mean("purity", np.mean)
        last = mean("purity", lambda v: v[-1])
        moved = mean("moved", lambda v: np.nanmean(v[1:]) if len(v) > 1 else float("nan"))
        overlap = mean("mask_overlap", lambda v: v[-1], "divided")
        lines.append(
            f"| {s.name} | {len(runs[0]['clusterings'])} | "
            f"{100 * first:.0f}% / {100 * avg:.0f}% / {100 * last:.0f}% | "
            f"{mean('classes_per_cluster', np.mean):.1f} | "
            f"{mean('size_ratio', np.mean):.1f} | "
            + (f"{100 * moved:.0f}%" if math.isfinite(moved) else "—") + " | "
            f"{mean('loss_mean', lambda v: v[-1], 'divided'):.3f}, "
            f"{mean('loss_spread', lambda v: v[-1], 'divided'):.3f} | "
            + (f"{overlap:.2f}" if math.isfinite(overlap) else "—") + " |")
    return "\n".join(lines)


def _train_classes(workdir) -> int:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "cluster_classes" in record:
                return int(sum(record["cluster_classes"])) if len(
                    record["cluster_classes"]) == 1 else -1
    return -1


def plot(settings, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6))
    cmap = plt.get_cmap("tab20")
    for i, s in enumerate(settings):
        runs = results.get(s.name)
        if not runs:
            continue
        epochs = [e for e, _ in runs[0]["curve"]]
        curves = np.array([[v for _, v in r["curve"]] for r in runs]) * 100
        style = "--" if s.overrides.get("divide.learner_schedule") == "round_robin" else "-"
        if s.overrides.get("divide.num_learners") == 1:
            style = ":"
        color = "k" if i == 0 else cmap(i % 20)
        ax.plot(epochs, curves.mean(0), style, color=color, label=s.name, lw=2 if i == 0 else 1)
        ax.fill_between(epochs, curves.min(0), curves.max(0), color=color, alpha=0.12)
    ax.set(xlabel="epoch (-1: untrained)", ylabel="R@1 on the unseen test classes (%)",
           title="R@1 per epoch: mean over seeds, shaded min to max")
    ax.legend(fontsize="x-small", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_line() -> str:
    import jax

    return (f"{platform.node() or 'host'}: {os.cpu_count()} CPUs, {platform.machine()}, "
            f"python {platform.python_version()}, jax {jax.__version__}")


def gpu_command(args) -> str:
    return ("python bench/accuracy.py --config=configs/cub.py --epochs=0 --seeds=0,1,2 "
            "--jobs=1 --out=runs/accuracy-cub --set data.root=/data/CUB_200_2011   "
            "# ResNet-50 (ImageNet weights), 224 px crops, the CUB config's 100 epochs; "
            "configs/cars.py or configs/sop.py the same way")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.py", help="base config file")
    parser.add_argument("--grid", default="main", help="main | investigate | demo | smoke | vit_optim")
    parser.add_argument("--settings", default="", help="comma-separated setting names to run "
                        "(default: the whole grid); the first of the grid is always the reference")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--epochs", type=int, default=10,
                        help="compress the base's phase plan to this many epochs (0: keep)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs at once; with more than one, each uses one CPU thread")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per run: 1 runs XLA single-threaded (the default when "
                             "--jobs > 1), 0 leaves XLA's default")
    parser.add_argument("--out", default="runs/accuracy", help="output folder")
    parser.add_argument("--pretrained", default="",
                        help="backbone file every run fine-tunes (model.pretrained), e.g. the "
                             "one `dnc-jax backbone` wrote from a pretraining run")
    parser.add_argument("--sweep", default="",
                        help="comma-separated RATE:BATCH points, multipliers of a setting's "
                             "backbone and head rates (on top of its own rule) and of its "
                             "per-learner batch, e.g. 0.3:1,1:1,3:1,1:2: each setting runs at "
                             "each point on --sweep_seed, and the best last-epoch R@1 decides "
                             "the point at which the other seeds run")
    parser.add_argument("--sweep_seed", type=int, default=None,
                        help="seed of the sweep (default: the first of --seeds); its run at "
                             "the chosen point is that seed's run of the table")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable), e.g. "
                             "--set data.name=folder --set data.root=/data/mine")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: write the table of the runs already finished "
                             "(settings with every seed done), e.g. while the bench runs")
    parser.add_argument("--gpu_command", action="store_true",
                        help="print the command for the full-size table on a GPU and exit")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    if args.gpu_command:
        print(gpu_command(args))
        return 0

    config_path = os.path.abspath(os.path.join(REPO, args.config)
                                  if not os.path.isabs(args.config) else args.config)
    base = _base_config(config_path)
    settings = grid(args.grid, base)
    if args.settings:
        wanted = set(args.settings.split(","))
        unknown = wanted - {s.name for s in settings}
        if unknown:
            raise SystemExit(f"bench/accuracy.py: --settings names not in --grid={args.grid}: "
                             f"{sorted(unknown)}; known: {[s.name for s in settings]}")
        settings = [s for i, s in enumerate(settings) if i == 0 or s.name in wanted]
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(out, "xla_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if args.threads == 1 or (args.jobs > 1 and args.threads == 0):
        # Small models scale poorly over threads: one thread a run, runs side by side.
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_cpu_multi_thread_eigen=false"
                            " intra_op_parallelism_threads=1").strip()

    if args.pretrained:
        pretrained_path = os.path.abspath(args.pretrained)
        if not os.path.isfile(pretrained_path):
            raise SystemExit(f"bench/accuracy.py: --pretrained={args.pretrained}: no such file "
                             f"(dnc-jax backbone writes one from a training run)")
        args.set = [f"model.pretrained={pretrained_path}", *args.set]
    epochs = phase_epochs(base, args.epochs)
    points = sweep_points(args.sweep)
    sweep_seed = seeds[0] if args.sweep_seed is None else args.sweep_seed

    def job(s, point, seed):
        workdir = run_dir(out, s.name, point if len(points) > 1 else None, seed)
        overrides = {**epochs, **s.overrides, **point_overrides(base, s.overrides, point)}
        return (s, seed, workdir, run_command(config_path, workdir, seed, overrides, args.set))

    print(f"bench/accuracy.py: {len(settings)} settings x {len(seeds)} seeds"
          + (f", each swept over {len(points)} points on seed {sweep_seed} first"
             if len(points) > 1 else "") + f" into {out} ({args.jobs} at once)", flush=True)
    t0 = time.time()
    sweep = {}
    if len(points) > 1:
        sweep_jobs = [job(s, p, sweep_seed) for s in settings for p in points]
        if args.report:
            sweep_jobs = []
        run_all(sweep_jobs, args.jobs, env, t0)
        sweep = {s.name: {p: _read_if_done(run_dir(out, s.name, p, sweep_seed)) for p in points}
                 for s in settings}
        settings = [s for s in settings if all(sweep[s.name].values())]
        chosen = {s.name: max(points, key=lambda p: sweep[s.name][p]["r1"]) for s in settings}
    else:
        chosen = {s.name: points[0] for s in settings}
    jobs = [job(s, chosen[s.name], seed) for s in settings for seed in seeds]
    if args.report:
        settings = [s for s in settings if all(
            os.path.exists(os.path.join(wd, "wall_seconds.txt"))
            for t, _, wd, _ in jobs if t.name == s.name)]
        jobs = []
    run_all(jobs, args.jobs, env, t0)
    dirs = {s.name: [run_dir(out, s.name, chosen[s.name] if len(points) > 1 else None, seed)
                     for seed in seeds] for s in settings}
    # The table's settings carry the chosen point, so that its batch and rate are printed.
    settings = [Setting(s.name, {**s.overrides, **point_overrides(base, s.overrides,
                                                                   chosen[s.name])})
                for s in settings]

    results = {s.name: [read_run(d) for d in dirs[s.name]] for s in settings}
    bad = [f"{name} seed {seeds[i]}" for name, runs in results.items()
           for i, r in enumerate(runs) if not r["finite"] or not math.isfinite(r["r1"])]
    text = [f"# Accuracy: {os.path.relpath(config_path, REPO)}, grid '{args.grid}'", "",
            f"Machine: {machine_line()}. Seeds {seeds}; "
            f"{args.epochs or base.num_epochs} epochs; per-learner batch "
            f"{per_learner_batch(base)}; extra overrides: {args.set or 'none'}. "
            f"Command: `python bench/accuracy.py {shlex.join(given)}`. "
            f"Last-epoch metrics on the unseen test classes, mean ± std over seeds; "
            f"Δ: difference of means ± its standard error.", "",
            table(settings, results, base), ""]
    if sweep:
        text += [f"The sweep (seed {sweep_seed}; R@1 / MAP@R at the last epoch; **bold**: the "
                 f"point each setting ran its seeds at, by R@1). Columns: multipliers of the "
                 f"backbone and head rates and of the per-learner batch.", "",
                 sweep_table(settings, sweep, chosen, points), ""]
    diag = diagnostics(settings, results, _train_classes(dirs[settings[0].name][0]))
    if diag.count("\n") > 1:
        text += ["Diagnostics of the divided runs (means over seeds). Class purity: the share of "
                 "a class's images that its majority cluster holds, averaged over classes (1/K: "
                 "classes spread evenly). Mask overlap: PAMI's orthogonality term, the mean "
                 "cosine between active learned masks.", "", diag, ""]
    if bad:
        text.append(f"Non-finite values in: {', '.join(bad)}")
    # One table and plot per grid: grids may share an --out (and its runs).
    table_path = os.path.join(out, f"table-{args.grid}.md")
    plot_path = os.path.join(out, f"recall-{args.grid}.png")
    with open(table_path, "w") as f:
        f.write("\n".join(text) + "\n")
    plot(settings, results, plot_path)
    print("\n".join(text))
    print(f"written: {table_path}, {plot_path}")
    print(f"full size on a GPU: {gpu_command(args)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
