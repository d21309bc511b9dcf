"""Where a run's time goes: wall seconds per phase of an epoch, and JAX's compilation time.

    clock = PhaseClock()
    with clock.phase("train"):
        ...
    clock.take()   # {'seconds/train': 8.5, 'seconds/compile': 0.0}, and starts over

Phases (PHASES, in the order the run's summary prints them): training (`train`), the
reclustering's embedding pass and its k-means + matching (`recluster_embed`,
`recluster_kmeans`), evaluation's embedding pass and its retrieval metrics (`eval_embed`,
`eval_retrieval`), and the blocking part of checkpoint saves (`checkpoint`; orbax writes the
files in the background). A phase's seconds end when its results exist on the device (the
caller blocks on them), so an asynchronous device's work is counted in the phase that asked
for it, never in the next one.

A phase opened inside another is taken out of the outer one (an in-epoch save during
training counts as `checkpoint`, not `train`). `seconds/wall` is the time since the previous
`take`, so `wall` minus the phases is the rest (the sampler's plan, plots, logging). Saves at
an epoch's end come after its record is written (a run killed between the two redoes the
epoch), so they are in the next record's `checkpoint`; the last ones, in the summary's.

`seconds/compile` is JAX's own account (its monitoring events: tracing, lowering and the
backend compile or the persistent cache's load) of the compilations since the previous
`take`. They happen inside the phases, so they are *in* the phases' seconds, not beside them:
the first epoch's train seconds include the step's compile.
"""
from __future__ import annotations

import contextlib
import time

import jax

PHASES = ("train", "recluster_embed", "recluster_kmeans", "eval_embed", "eval_retrieval",
          "checkpoint")
PREFIX = "seconds/"
COMPILE = PREFIX + "compile"
WALL = PREFIX + "wall"
# JAX's monitoring events whose durations add up to a compilation (jax/_src/dispatch.py).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class PhaseClock:
    """Accumulates wall seconds per phase and the compile seconds JAX reports, until `take`."""

    def __init__(self):
        self._seconds: dict[str, float] = {}
        self._compile = 0.0
        self._listening = False
        self._open: list[list] = []  # [name, since]: the phases entered, innermost last
        self._since_take = time.perf_counter()

    def _on_event(self, event, duration, **_):
        if event in COMPILE_EVENTS:
            self._compile += duration

    def start(self):
        """Starts listening to JAX's compile events (once; `close` stops)."""
        if not self._listening:
            jax.monitoring.register_event_duration_secs_listener(self._on_event)
            self._listening = True
        return self

    def close(self):
        if self._listening:
            jax.monitoring.unregister_event_duration_listener(self._on_event)
            self._listening = False

    @contextlib.contextmanager
    def phase(self, name: str):
        """Counts the block's wall seconds as `name`'s, less those of phases opened inside."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases: {PHASES}")
        now = time.perf_counter()
        if self._open:  # the outer phase stops counting while this one runs
            outer = self._open[-1]
            self._add(outer[0], now - outer[1])
        self._open.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            self._add(name, now - self._open.pop()[1])
            if self._open:
                self._open[-1][1] = now

    def _add(self, name: str, seconds: float):
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def take(self) -> dict:
        """{'seconds/<phase>': s, ..., 'seconds/compile': s, 'seconds/wall': s} since the last
        take (a phase still open keeps its seconds so far for the next take); then zero."""
        now = time.perf_counter()
        if self._open:  # only the innermost one is counting
            self._add(self._open[-1][0], now - self._open[-1][1])
            self._open[-1][1] = now
        out = {PREFIX + name: round(self._seconds[name], 4) for name in PHASES
               if name in self._seconds}
        out[COMPILE] = round(self._compile, 4)
        out[WALL] = round(now - self._since_take, 4)
        self._seconds, self._compile, self._since_take = {}, 0.0, now
        return out


def totals(records) -> dict:
    """{'<phase>': seconds summed over the records, ..., 'compile': ...}, for the summary."""
    out = {}
    for record in records:
        for key, value in record.items():
            if key.startswith(PREFIX):
                name = key[len(PREFIX):]
                out[name] = out.get(name, 0.0) + float(value)
    return out


def table(totals_: dict) -> list[str]:
    """The summary's lines: each phase's seconds and share of the epochs' wall time, what is
    around the train step together, the rest, and compilation (a part of the phases)."""
    wall = totals_.get("wall", 0.0)
    phases = [name for name in PHASES if name in totals_]
    if wall <= 0 or not phases:
        return []
    lines = [f"{'phase':<22}{'seconds':>10}{'share':>8}"]
    rows = [(name, totals_[name]) for name in phases]
    rows.append(("rest (plans, plots)", wall - sum(totals_[name] for name in phases)))
    rows.append(("around the step", wall - totals_.get("train", 0.0)))
    rows.append(("(of which compile)", totals_.get("compile", 0.0)))
    lines += [f"{name:<22}{seconds:>10.1f}{seconds / wall:>8.1%}" for name, seconds in rows]
    return lines
