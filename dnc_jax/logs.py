"""Run outputs: metrics.jsonl (one JSON object per line), console summaries, progress bars.

Only process 0 writes, so a multi-host run produces one set of files.
"""
from __future__ import annotations

import json
import math
import os
import sys

from dnc_jax.parallel import is_main_process


class MetricsWriter:
    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")

    def write(self, record: dict) -> None:
        if not is_main_process():
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        """The records; a last line cut short by a killed process is left out."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise
        return records

    def truncate_after(self, epoch: int) -> None:
        """Drops records of epochs after `epoch` (a resumed run redoes them)."""
        if not is_main_process() or not os.path.exists(self.path):
            return
        kept = [r for r in self.read() if r.get("epoch", -1) <= epoch]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in kept:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def bar_interval() -> float:
    """Seconds between progress-bar refreshes: live on a terminal; in a log file (SLURM, nohup)
    every 30 s, so the bar leaves a line of progress now and then instead of thousands."""
    return 0.1 if sys.stderr.isatty() else 30.0


def progress_bar(total: int, desc: str, enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                disable=not (enabled and is_main_process()), unit="step",
                mininterval=bar_interval())


def say(msg: str) -> None:
    """A line the user should see in the console whatever the absl verbosity."""
    if is_main_process():
        print(msg, flush=True)


class Board:
    """TensorBoard event files (tensorboardX) of the per-epoch numbers, under WORKDIR/tensorboard."""

    def __init__(self, workdir: str):
        self.directory = os.path.join(workdir, "tensorboard")
        self.writer = None

    def write(self, record: dict) -> None:
        if not is_main_process():
            return
        if self.writer is None:
            # Made at the first record: on Python >= 3.12 a writer never written to (a run that
            # stops or fails before its first record) makes tensorboardX's own close at exit
            # fail ("can't create new thread at interpreter shutdown").
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(self.directory)
        epoch = record.get("epoch", -1)
        for key, value in record.items():
            if key == "epoch" or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, epoch)
            elif isinstance(value, list) and value and isinstance(value[0], (int, float)):
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"{key}/{i}", v, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
