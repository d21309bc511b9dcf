"""Loop overhead: images/s of whole training epochs over images/s of the bare jitted step.

    python bench/loop_overhead.py [--config=demo] [--epochs=2] [--set key=value ...]

One run, one model, one batch size, one device set. The *loop* is `Trainer.train_epoch` as
training runs it (sampler plan, gather of the batch rows, placement on the devices, host-cut
views when the data are image files, the jitted step, metrics read a few steps late, the
progress bar off); the *bare step* is the same compiled step called back to back on one batch
already on the devices. Both after a warm-up epoch that compiles everything, at the config's
first divide phase (K learners). Prints one Markdown row for BENCHMARKS.md: machine, versions,
command, both throughputs and their ratio (1.0 = the loop costs nothing beyond its step).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from dnc_jax import api, feed, parallel  # noqa: E402
from dnc_jax.data import sampler as sampler_lib  # noqa: E402
from dnc_jax.data import sources  # noqa: E402
from dnc_jax.divide import masks, schedule  # noqa: E402
from dnc_jax.train import Trainer  # noqa: E402


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def first_divide_epoch(config) -> int:
    return next(e for e in range(config.num_epochs)
                if schedule.phase(config.divide, e).num_learners == config.divide.num_learners)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="demo")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    config = api.get_config(args.config, progress=False,
                            **{k: _value(v) for k, v in (s.split("=", 1) for s in args.set)})
    from dnc_jax import defaults

    config = defaults.complete(config)
    datasets = sources.load_dataset(config.data)
    mesh = parallel.make_mesh()
    trainer = Trainer(config, datasets, mesh)
    try:
        epoch = first_divide_epoch(config)
        phase = schedule.phase(config.divide, epoch)
        arrays = masks.phase_arrays(config, phase)
        state = trainer.init_state(jax.random.key(0))
        assignment, _ = trainer.cluster(state, arrays["slices"], phase, None, jax.random.key(1))
        sampler = sampler_lib.make_sampler(
            config.divide.learner_schedule, trainer.train_set.labels, assignment,
            phase.num_learners, config.data.batch_size, config.data.samples_per_class,
            config.seed, config.data.epoch_length, sampler=config.data.sampler,
            method=config.divide.schedule)
        rng = jax.random.key(2)
        state, _, _ = trainer.train_epoch(state, sampler, epoch, arrays, rng)  # compiles

        steps = 0
        t0 = time.perf_counter()
        for e in range(args.epochs):
            state, history, _ = trainer.train_epoch(state, sampler, epoch + 1 + e, arrays, rng)
            steps += len(history)
        jax.block_until_ready(state)
        loop_s = time.perf_counter() - t0

        batch = next(iter(feed.train_batches(
            trainer.train_set, sampler.epoch(epoch), config.data.batch_size, mesh,
            trainer.loader, config.augment, config.seed, epoch)))
        phase_dev = parallel.put_replicated(arrays, mesh)
        for _ in range(3):
            state, metrics = trainer.train_step(state, batch, phase_dev, rng)
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = trainer.train_step(state, batch, phase_dev, rng)
        jax.block_until_ready(metrics)
        bare_s = time.perf_counter() - t0
    finally:
        trainer.close()

    b = config.data.batch_size
    loop, bare = steps * b / loop_s, steps * b / bare_s
    command = " ".join(["python bench/loop_overhead.py", *sys.argv[1:]])
    print(f"| {jax.devices()[0].device_kind} x{jax.device_count()} ({os.cpu_count()} cores, "
          f"{platform.python_version()}, jax {jax.__version__}) | `{command}` | "
          f"{config.model.name} batch {b}, {steps} steps | {loop:.0f} | {bare:.0f} | "
          f"{loop / bare:.3f} |")


if __name__ == "__main__":
    main()
