"""The phase clock: nested phases counted once, JAX's compile events, the summary's table."""
import jax
import jax.numpy as jnp
import pytest

from dnc_jax.training import phase_clock


class FakeTime:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def fake_time(monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(phase_clock.time, "perf_counter", clock)
    return clock


def test_an_inner_phase_is_taken_out_of_the_outer_one(fake_time):
    clock = phase_clock.PhaseClock()
    fake_time.now += 1.0                      # 1 s before any phase: only in the wall time
    with clock.phase("train"):
        fake_time.now += 2.0
        with clock.phase("checkpoint"):       # an in-epoch save
            fake_time.now += 0.5
        fake_time.now += 3.0
    with clock.phase("eval_retrieval"):
        with clock.phase("eval_embed"):
            fake_time.now += 4.0
        fake_time.now += 0.25
    taken = clock.take()
    assert taken == {"seconds/train": 5.0, "seconds/checkpoint": 0.5, "seconds/eval_embed": 4.0,
                     "seconds/eval_retrieval": 0.25, "seconds/compile": 0.0,
                     "seconds/wall": 10.75}
    # take() starts over; a phase open across a take splits its seconds between the two.
    with clock.phase("train"):
        fake_time.now += 1.0
        assert clock.take()["seconds/train"] == 1.0
        fake_time.now += 2.0
    assert clock.take() == {"seconds/train": 2.0, "seconds/compile": 0.0, "seconds/wall": 2.0}


def test_an_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown phase 'trian'"):
        with phase_clock.PhaseClock().phase("trian"):
            pass


def test_compile_seconds_are_jax_own_events_and_stop_with_the_clock():
    clock = phase_clock.PhaseClock().start()
    try:
        f = jax.jit(lambda x: jnp.sin(x) * 3.0 + x.sum())  # a new function: traced, compiled
        x = jnp.arange(7.0)
        clock.take()                          # arange's own compile
        with clock.phase("train"):
            jax.block_until_ready(f(x))
        first = clock.take()
        assert 0 < first["seconds/compile"] <= first["seconds/train"]
        with clock.phase("train"):
            jax.block_until_ready(f(x))       # cached: nothing compiles
        assert clock.take()["seconds/compile"] == 0.0
    finally:
        clock.close()
    g = jax.jit(lambda x: jnp.cos(x) - 1.0)
    jax.block_until_ready(g(jnp.arange(5.0)))  # compiles after close: not counted
    assert clock.take()["seconds/compile"] == 0.0


def test_totals_and_the_summary_table():
    records = [{"epoch": -1, "seconds/eval_embed": 1.0, "seconds/eval_retrieval": 0.5,
                "seconds/compile": 2.0, "seconds/wall": 2.0, "recall@1": 0.1},
               {"epoch": 0, "seconds/train": 6.0, "seconds/recluster_embed": 1.0,
                "seconds/recluster_kmeans": 0.5, "seconds/eval_embed": 1.0,
                "seconds/eval_retrieval": 0.5, "seconds/compile": 3.0, "seconds/wall": 9.5}]
    tail = {"seconds/checkpoint": 0.5, "seconds/compile": 0.0, "seconds/wall": 0.5}
    totals = phase_clock.totals(records + [tail])
    assert totals == {"eval_embed": 2.0, "eval_retrieval": 1.0, "compile": 5.0, "wall": 12.0,
                      "train": 6.0, "recluster_embed": 1.0, "recluster_kmeans": 0.5,
                      "checkpoint": 0.5}
    lines = phase_clock.table(totals)
    rows = {line[:22].strip(): line[22:].split() for line in lines[1:]}
    assert rows["train"] == ["6.0", "50.0%"]
    assert rows["eval_embed"] == ["2.0", "16.7%"]
    # 12 - (6 + 1 + 0.5 + 2 + 1 + 0.5) = 1 s outside every phase; 6 s around the step.
    assert rows["rest (plans, plots)"] == ["1.0", "8.3%"]
    assert rows["around the step"] == ["6.0", "50.0%"]
    assert rows["(of which compile)"] == ["5.0", "41.7%"]
    assert phase_clock.table({"compile": 1.0}) == []
