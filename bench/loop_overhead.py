"""Loop overhead: images/s of whole training epochs over images/s of the bare jitted step.

    python bench/loop_overhead.py [--config=demo] [--epochs=2] [--set key=value ...]
    python bench/loop_overhead.py --like=sop_scale --set data.root=/tmp/fake_sop   # SOP's size
    python bench/loop_overhead.py --profile        # + where the loop's host time goes
    python bench/loop_overhead.py --compare_calls --set steps_per_call=0  # call a step vs round

One run, one model, one batch size, one device set. The *loop* is `Trainer.train_epoch` as
training runs it (sampler plan, gather of the batch rows, placement on the devices, host-cut
views when the data are image files, the jitted step, metrics read a few steps late, the
progress bar off); the *bare step* is the same compiled step called back to back on one batch
already on the devices. Both after a warm-up epoch that compiles everything, at the config's
first divide phase (K learners). Prints one Markdown row for BENCHMARKS.md: machine, versions,
command, both throughputs and their ratio (1.0 = the loop costs nothing beyond its step).

`--like=sop_scale` takes `bench/sop_scale.py`'s run (configs/sop.py with the overrides that
script prints) on the fake SOP it writes: 59,551 JPEGs cut by worker processes, 640 a step.
`--profile` then trains one more epoch under cProfile and prints, for the main process, the
seconds spent in each part of the loop (waiting on the view workers, box draws, placement,
dispatching the step, reading the metrics back, which is where the host waits for the device),
and the CPU time of the main process and of the view workers, as a second table.
`--compare_calls` times the loop twice more, alternating, with one compiled call per step
(`steps_per_call=1`) and with the config's calls of several steps (`steps_per_call`; 0 is one
round of learners), and prints the second's img/s over the first's as another table.
`--split_cores` puts the device (XLA's CPU threads) on the first half of the cores and the view
workers on the rest: on a CPU the "device" otherwise computes on the very cores that decode
the images, which a GPU host does not; the bare step then runs on that half too.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def split_cores() -> tuple[set, set]:
    """(device cores, view-worker cores): the first half of this process's cores, the rest."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--split_cores needs at least 2 cores")
    half = len(cores) // 2
    return set(cores[:half]), set(cores[half:])


# Before JAX starts: XLA's CPU thread pool is sized by the cores this process may run on. (Not
# in the spawned view workers, which import this module as __mp_main__.)
SPLIT = split_cores() if __name__ == "__main__" and "--split_cores" in sys.argv else None
if SPLIT:
    os.sched_setaffinity(0, SPLIT[0])

import jax  # noqa: E402

from dnc_jax import api, parallel  # noqa: E402
from dnc_jax.data import feed
from dnc_jax.data import sampling  # noqa: E402
from dnc_jax.data import sources  # noqa: E402
from dnc_jax.divide import masks, schedule  # noqa: E402
from dnc_jax.training.trainer import Trainer  # noqa: E402


def _value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def like_sop_scale() -> tuple[str, dict]:
    """configs/sop.py and the overrides bench/sop_scale.py prints, as get_config arguments."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sop_scale", os.path.join(os.path.dirname(os.path.abspath(__file__)), "sop_scale.py"))
    sop_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sop_scale)
    overrides = {}
    for flag in sop_scale.OVERRIDES:
        key, value = flag.removeprefix("--config.").split("=", 1)
        overrides[key] = _value(value)
    return "sop", overrides


# The loop's parts, as (label, cProfile's function names that own its time in the main
# process). Cumulative times, so a part includes what it calls.
LOOP_PARTS = (
    ("waiting on the view workers (and the copy out of their buffer)", ("_collect",)),
    ("crop boxes", ("random_resized_crop_boxes",)),
    ("sampler plan", ("epoch",)),
    ("placement on the devices", ("put_rows", "put_local", "put_replicated")),
    # On an asynchronous device this is where the host waits for the step to finish.
    ("metrics read back (device_get: waits for the device)", ("drain",)),
    ("dispatching the jitted step", ("dispatch_step",)),
)


def profile_table(profile: cProfile.Profile, loop_s: float, cpu) -> str:
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    rows = ["| part of the loop (main process) | seconds | of the loop |", "|---|---|---|"]
    for label, names in LOOP_PARTS:
        seconds = sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                      if name in names and ("dnc_jax" in file or "loop_overhead" in file))
        rows.append(f"| {label} | {seconds:.2f} | {seconds / loop_s:.1%} |")
    rows.append(f"| the profiled epoch | {loop_s:.2f} | 100.0% |")
    rows.append(f"| CPU time of the main process (its XLA threads included) | {cpu[0]:.2f} | "
                f"{cpu[0] / loop_s:.1%} |")
    rows.append(f"| CPU time of the view workers, all together | {cpu[1]:.2f} | "
                f"{cpu[1] / loop_s:.1%} |")
    return "\n".join(rows)


def worker_pids(trainer) -> list[int]:
    """The view workers' process ids (none for arrays, whose crops the device cuts)."""
    executor = trainer.loader._executor if trainer.loader is not None else None
    return [] if executor is None else list(executor._processes)


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def profiled_epoch(trainer, state, sampler, epoch, arrays, rng):
    """One training epoch under cProfile: (state, profile, seconds, (CPU seconds of this
    process, of the view workers))."""
    jitted = trainer.train_step

    def dispatch_step(*step_args):  # a Python frame around the jitted call, which cProfile
        return jitted(*step_args)   # does not see by itself

    trainer.train_step = dispatch_step
    profile = cProfile.Profile()
    workers = worker_pids(trainer)
    cpu0 = time.process_time(), cpu_seconds(workers)
    t0 = time.perf_counter()
    profile.enable()
    try:
        state, _, _ = trainer.train_epoch(state, sampler, epoch, arrays, rng)
        jax.block_until_ready(state)
    finally:
        profile.disable()
        trainer.train_step = jitted
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0[0], cpu_seconds(workers) - cpu0[1]
    return state, profile, seconds, cpu


def compare_calls(trainer, state, sampler, first_epoch, arrays, rng, epochs) -> dict:
    """img/s of the loop with one call per step and with `trainer.steps_per_call` steps per
    call, epochs alternating between the two so that drifts of the machine hit both alike."""
    fused = trainer.steps_per_call
    if fused == 1:
        raise SystemExit("--compare_calls: the config makes one call per step; give "
                         "--set steps_per_call=N (N > 1) or a round_robin config")
    seconds, images, epoch = {1: 0.0, fused: 0.0}, {1: 0, fused: 0}, first_epoch
    # One untimed epoch each first: the one-step function compiles for whole epochs only here.
    for n in (1, fused, 1, fused) * epochs:
        trainer.steps_per_call = n
        t0 = time.perf_counter()
        state, history, _ = trainer.train_epoch(state, sampler, epoch, arrays, rng)
        jax.block_until_ready(state)
        if epoch >= first_epoch + 2:
            seconds[n] += time.perf_counter() - t0
            images[n] += len(history) * trainer.config.data.batch_size
        epoch += 1
    trainer.steps_per_call = fused
    return {"state": state, "epochs": epochs * 2 - 1,
            "rates": {n: images[n] / seconds[n] for n in seconds}}


def first_divide_epoch(config) -> int:
    return next(e for e in range(config.num_epochs)
                if schedule.phase(config.divide, e).num_learners == config.divide.num_learners)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="demo")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up)")
    p.add_argument("--like", choices=["sop_scale"], default=None,
                   help="sop_scale: bench/sop_scale.py's run (give --set data.root=...)")
    p.add_argument("--profile", action="store_true",
                   help="also print where the main process spends the timed epochs")
    p.add_argument("--split_cores", action="store_true",
                   help="the device (XLA) on the first half of the cores, the view workers on "
                        "the rest, as on a GPU host where the step does not share the host's "
                        "cores; the bare step runs on the same half")
    p.add_argument("--compare_calls", action="store_true",
                   help="also time the loop with one call per step against the config's "
                        "steps per call (alternating, 2 x --epochs each)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    if args.split_cores:
        args.set.append(f"data.view_workers={len(SPLIT[1])}")
    name, overrides = like_sop_scale() if args.like else (args.config, {})
    overrides.update({k: _value(v) for k, v in (s.split("=", 1) for s in args.set)})
    config = api.get_config(name, **{**overrides, "progress": False})
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
        sampler = sampling.make_sampler(
            config.divide.learner_schedule, trainer.train_set.labels, assignment,
            phase.num_learners, config.data.batch_size, config.data.samples_per_class,
            config.seed, config.data.epoch_length, sampler=config.data.sampler,
            method=config.divide.schedule)
        rng = jax.random.key(2)
        state, _, _ = trainer.train_epoch(state, sampler, epoch, arrays, rng)  # compiles
        if args.split_cores:  # the workers started in the warm-up, on the device's cores
            for pid in worker_pids(trainer):
                os.sched_setaffinity(pid, SPLIT[1])

        steps = 0
        t0 = time.perf_counter()
        for e in range(args.epochs):
            state, history, _ = trainer.train_epoch(state, sampler, epoch + 1 + e, arrays, rng)
            steps += len(history)
        jax.block_until_ready(state)
        loop_s = time.perf_counter() - t0

        calls = None
        if args.compare_calls:
            calls = compare_calls(trainer, state, sampler, epoch + 1 + args.epochs, arrays, rng,
                                  args.epochs)
            state = calls.pop("state")

        profile = None
        if args.profile:  # one more epoch, profiled apart so the ratio above is unperturbed
            state, profile, profiled_s, cpu = profiled_epoch(
                trainer, state, sampler, epoch + 1 + args.epochs, arrays, rng)

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
    if calls:
        print()
        print("| steps per call | img/s (loop) | epochs timed |")
        print("|---|---|---|")
        for n, rate in calls["rates"].items():
            print(f"| {n} | {rate:.0f} | {calls['epochs']} |")
        n = trainer.steps_per_call
        print(f"\n{n} steps per call over 1: {calls['rates'][n] / calls['rates'][1]:.3f}")
    if profile:
        print()
        print(profile_table(profile, profiled_s, cpu))


if __name__ == "__main__":
    main()
