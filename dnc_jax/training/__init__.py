"""Training: a config in, a trained run's folder out.

`train.train_and_evaluate(config, workdir)` runs the epoch loop (`train.py`): each epoch the
phase plan says what K is and when to recluster, `trainer.py` trains the learners one jitted
step at a time (`steps.py`, fed by `data/feed.py` from the sampler's plan, the optimiser and its
per-phase rates in `optim.py`), evaluates on the held-out classes and reclusters; what a run
says and writes is `reporting.py`'s and `plots.py`'s, where its time goes `phase_clock.py`'s,
and `run_guard.py` keeps the workdir safe (one writer, resume checks, SIGTERM).
Nothing outside this package imports it but the entry points (`dnc_jax.main`, `dnc_jax.api`).
"""
