"""`python -m dnc_jax.main` with every multi-process barrier name written down, for
tests/test_multiprocess_runs.py.

orbax meets the processes of a run at barriers named after what is saved (the step, and a
folder's prefix); a name entered twice by one process is a collision ("Barrier ... is already
ongoing" when the two overlap, as a real SLURM run hit), whether or not this run's timing made
them overlap. orbax's barrier functions pass every name through
`multihost._unique_barrier_key`, which orbax keeps replaceable for tests: here it appends the
name to $BARRIER_LOG (one line per barrier) and returns it unchanged.

    BARRIER_LOG=FILE python tests/barrier_recorder.py MAIN FLAGS...
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _install(path):
    import threading

    from orbax.checkpoint._src.multihost import multihost

    lock = threading.Lock()

    def recording(key):
        with lock, open(path, "a") as f:
            f.write(key + "\n")
        return key

    multihost._unique_barrier_key = recording


if __name__ == "__main__":
    _install(os.environ["BARRIER_LOG"])
    from dnc_jax import cli, main

    cli.run(main.main)
