"""The embedding pass against a bare forward: images/s of `EmbeddingPass` as training runs it
(evaluation's and reclustering's pass) over images/s of its compiled forward called back to
back on one batch already on the devices.

    python bench/embed_pass.py [--config=demo] [--split=train] [--repeats=3] [--set k=v ...]
    python bench/embed_pass.py --like=sop_scale --set data.root=/tmp/fake_sop --split_cores
    python bench/embed_pass.py --profile      # + where the pass's host time goes

One run, one model, one batch size (`data.eval_batch_size`). The *pass* is `Trainer.embed` on
a split (the gather of the rows or the host-cut eval views from the files, their placement,
the jitted forward, the outputs kept on the device as the clustering and the evaluation use
them), and `--to_host` the API's variant that fetches every batch's embeddings one batch late
(`embed`/`search`/`evaluate` on a saved run). The *bare forward* is the same compiled program
on one batch already on the devices. Passes and bare runs alternate `--repeats` times, after a
warm-up of each that compiles everything; the ratio is of the summed times.

`--profile` runs one more pass under cProfile and prints the main process's seconds in each
part: waiting on the view workers, the gather of rows (a host copy), placement on the devices,
dispatching the forward, reading outputs back (where the host waits for the device) and the
final concatenation. `--copy` times the host-to-device copy of one batch of views alone, one
array and in four parts, and the bare forward with a fresh copy of its batch every call against
the resident one: whether the copy or the compute bounds the pass at the device's rate.

Prints Markdown tables for BENCHMARKS.md with the machine and the command.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import loop_overhead  # noqa: E402

# Before JAX's backend starts (its CPU thread pool is sized by the cores this process may use).
SPLIT = (loop_overhead.split_cores() if __name__ == "__main__" and "--split_cores" in sys.argv
         else None)
if SPLIT:
    os.sched_setaffinity(0, SPLIT[0])

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dnc_jax import api, defaults, parallel  # noqa: E402
from dnc_jax.inference import embedding
from dnc_jax.data import feed
from dnc_jax.data import sources  # noqa: E402
from dnc_jax.divide import masks, schedule  # noqa: E402
from dnc_jax.training.trainer import Trainer  # noqa: E402

# The pass's parts: (label, (file fragment, function name) pairs whose cumulative time, in the
# main process, is that part's).
PASS_PARTS = (
    ("waiting on the view workers (and the copy out of their buffer)",
     (("host_views", "_collect"),)),
    ("gather of the rows and placement on the devices",
     (("parallel", "put_rows"), ("parallel", "put_local"))),
    ("dispatching the jitted forward", (("embed_pass", "dispatch_forward"),)),
    ("outputs read back (device_get: waits for the device)", (("embedding", "_collect"),)),
    ("waiting for the last batches (block_until_ready)", (("embed_pass", "wait"),)),
    ("concatenation of the outputs", (("embedding", "_concatenate"),)),
)


def profile_table(profile, seconds) -> str:
    stats = pstats.Stats(profile).stats
    rows = ["| part of the pass (main process) | seconds | of the pass |", "|---|---|---|"]
    for label, names in PASS_PARTS:
        total = sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                    if any(name == n and fragment in file for fragment, n in names))
        rows.append(f"| {label} | {total:.3f} | {total / seconds:.1%} |")
    rows.append(f"| the profiled pass | {seconds:.3f} | 100.0% |")
    return "\n".join(rows)


def wait(x):  # a frame for cProfile around the final block
    return jax.block_until_ready(x)


class Bench:
    def __init__(self, trainer, state, image_set, slices, to_host):
        self.trainer, self.image_set, self.to_host = trainer, image_set, to_host
        self.variables = (state.params["model"], state.batch_stats)
        self.slices = slices
        self.pass_ = trainer.embedding
        self.cut = feed.host_cut(image_set.images)
        self.step = self.pass_._step(self.cut)
        self.batch = self.pass_.batch_size
        self.batches = -(-len(image_set) // self.batch)

    def run_pass(self):
        out = self.pass_(self.variables, self.image_set.images, self.slices,
                         self.image_set.sizes, outputs=("embedding",), to_host=self.to_host)
        return wait(out)

    def first_batch(self):
        loader = self.pass_._view_loader() if self.cut else None
        return next(iter(feed.embed_batches(self.image_set.images, self.image_set.sizes,
                                            self.batch, self.trainer.mesh, loader)))

    def run_bare(self, batch, sizes, calls):
        slices = parallel.put_replicated(np.asarray(self.slices), self.trainer.mesh)
        out = None
        for _ in range(calls):
            out = self.step(*self.variables, batch, sizes, slices)
        return jax.block_until_ready(out)


def copy_table(bench, host_batch, calls) -> str:
    """Host-to-device copy of one batch of uint8 views, and the forward fed a fresh copy."""
    mesh = bench.trainer.mesh
    n = len(host_batch)
    rows = np.arange(n)

    def put_whole():
        return jax.block_until_ready(parallel.put_rows(host_batch, rows, mesh))

    def put_parts():
        parts = [parallel.put_rows(host_batch, r, mesh) for r in np.array_split(rows, 4)]
        return jax.block_until_ready(parts)

    def timed(fn, repeats=calls):
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    whole, parts = timed(put_whole), timed(put_parts)
    slices = parallel.put_replicated(np.asarray(bench.slices), mesh)
    resident = parallel.put_rows(host_batch, rows, mesh)

    def fed(fresh):
        out = None
        for _ in range(calls):
            batch = parallel.put_rows(host_batch, rows, mesh) if fresh else resident
            out = bench.step(*bench.variables, batch, None, slices)
        return jax.block_until_ready(out)

    resident_s, fresh_s = timed(lambda: fed(False), 1) / calls, timed(lambda: fed(True), 1) / calls
    gb = host_batch.nbytes / 1e9
    return "\n".join([
        "| what (one batch of uint8 views) | ms | GB/s or img/s |", "|---|---|---|",
        f"| host-to-device copy, one array ({host_batch.nbytes / 1e6:.1f} MB) | "
        f"{whole * 1e3:.2f} | {gb / whole:.2f} GB/s |",
        f"| host-to-device copy, four arrays | {parts * 1e3:.2f} | {gb / parts:.2f} GB/s |",
        f"| forward on a resident batch | {resident_s * 1e3:.2f} | {n / resident_s:.0f} img/s |",
        f"| forward fed a fresh copy every call | {fresh_s * 1e3:.2f} | {n / fresh_s:.0f} img/s |",
    ])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="demo")
    p.add_argument("--like", choices=["sop_scale"], default=None)
    p.add_argument("--split", default="train", help="the split to embed (train: reclustering)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes (and bare runs)")
    p.add_argument("--to_host", action="store_true",
                   help="fetch the embeddings batch by batch (the API's pass)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--copy", action="store_true", help="also time the host-to-device copy")
    p.add_argument("--split_cores", action="store_true",
                   help="XLA on half the cores, the view workers on the rest (a GPU host)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    if args.split_cores:
        args.set.append(f"data.view_workers={len(SPLIT[1])}")
    name, overrides = loop_overhead.like_sop_scale() if args.like else (args.config, {})
    overrides.update({k: loop_overhead._value(v) for k, v in (s.split("=", 1) for s in args.set)})
    config = defaults.complete(api.get_config(name, **{**overrides, "progress": False}))
    datasets = sources.load_dataset(config.data)
    trainer = Trainer(config, datasets, parallel.make_mesh())
    try:
        epoch = loop_overhead.first_divide_epoch(config)
        slices = masks.phase_arrays(config, schedule.phase(config.divide, epoch))["slices"]
        state = trainer.init_state(jax.random.key(0))
        bench = Bench(trainer, state, datasets[args.split], slices, args.to_host)
        bench.run_pass()  # compiles; starts the view workers
        if args.split_cores:
            for pid in loop_overhead.worker_pids(trainer):
                os.sched_setaffinity(pid, SPLIT[1])
        batch, sizes = bench.first_batch()
        bench.run_bare(batch, sizes, 2)
        pass_s = bare_s = 0.0
        for _ in range(args.repeats):  # alternating, so that drifts of the machine hit both
            t0 = time.perf_counter()
            bench.run_pass()
            pass_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            bench.run_bare(batch, sizes, bench.batches)
            bare_s += time.perf_counter() - t0
        profile = None
        if args.profile:
            step = bench.pass_._steps[bench.cut]

            def dispatch_forward(*a):  # a Python frame around the jitted call for cProfile
                return step(*a)

            bench.pass_._steps[bench.cut] = dispatch_forward
            profile = cProfile.Profile()
            t0 = time.perf_counter()
            profile.enable()
            try:
                bench.run_pass()
            finally:
                profile.disable()
                bench.pass_._steps[bench.cut] = step
            profiled_s = time.perf_counter() - t0
        copy = None
        if args.copy:
            host_batch = np.asarray(jax.device_get(batch)) if bench.cut else \
                np.asarray(bench.image_set.images[:bench.batch])
            copy = copy_table(bench, host_batch, max(3, min(bench.batches, 20)))
    finally:
        trainer.close()

    images = args.repeats * bench.batches * bench.batch
    rate, bare = images / pass_s, images / bare_s
    command = " ".join(["python bench/embed_pass.py", *sys.argv[1:]])
    source = "image files, host-cut views" if bench.cut else "uint8 rows, views on the device"
    print(f"| {jax.devices()[0].device_kind} x{jax.device_count()} ({os.cpu_count()} cores, "
          f"{platform.python_version()}, jax {jax.__version__}) | `{command}` | "
          f"{config.model.name} {config.dtype}, batch {bench.batch}, {len(bench.image_set)} "
          f"{args.split} images ({source}) | {rate:.0f} | {bare:.0f} | {rate / bare:.3f} |")
    if profile is not None:
        print()
        print(profile_table(profile, profiled_s))
    if copy:
        print()
        print(copy)


if __name__ == "__main__":
    main()
