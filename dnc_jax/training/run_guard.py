"""What keeps a run safe: one writer per workdir, a writable workdir, graceful stops, and a
refusal to resume a workdir with a config that would change the run."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import tempfile

from dnc_jax import defaults
from dnc_jax.errors import RunError

# Keys that do not change what a run computes: reporting, bookkeeping, the number of epochs
# (asking a finished run for more epochs continues it), how many steps one compiled call
# makes (the same updates; float sums may differ in their last bits), where compiled
# programs are cached, and who cuts the views and whether eval views are kept (the same pixels).
_NEUTRAL_PREFIXES = ("progress", "log_every_steps", "num_epochs", "steps_per_call",
                     "compilation_cache_dir",
                     "checkpoint.", "eval.",
                     "data.cache_dir", "data.root", "data.tfds_data_dir", "data.eval_batch_size",
                     "data.view_workers", "data.cache_eval_views")

class WorkdirLock:
    """An exclusive flock on WORKDIR/.lock, released when the process ends (even by SIGKILL)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._file = None

    def __enter__(self):
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            owner = self._file.read().strip() or "another process"
            self._file.close()
            raise RunError(f"{os.path.dirname(self.path)} is in use by a running training "
                           f"({owner}); use another --workdir or wait for it to end") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}")
        self._file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def check_writable(workdir: str, create: bool = True) -> None:
    """Fail before training, not at the first checkpoint hours later.

    With `create=False` nothing is written: the workdir, or the nearest existing folder
    above it, must be writable.
    """
    if not create:
        path = os.path.abspath(workdir)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        if not os.path.isdir(path):
            raise RunError(f"cannot write to --workdir={workdir}: {path} is not a folder")
        if not os.access(path, os.W_OK):
            raise RunError(f"cannot write to --workdir={workdir}: {path} is not writable")
        return
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunError(f"cannot write to --workdir={workdir}: {e.strerror or e}") from None


def changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, neutral keys left out."""
    keys = sorted(set(saved) | set(current))
    out = []
    for k in keys:
        name = f"{prefix}{k}"
        a, b = saved.get(k, "<absent>"), current.get(k, "<absent>")
        if a == "<absent>" and name in defaults.ADDED_KEYS:
            a = defaults.ADDED_KEYS[name]
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, name + ".")
        elif _normalise(a) != _normalise(b) and not name.startswith(_NEUTRAL_PREFIXES):
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def _normalise(v):
    return list(v) if isinstance(v, tuple) else v


def check_resume_config(workdir: str, config, allow_changes: bool) -> None:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    current = json.loads(config.to_json_best_effort())
    diff = changed_keys(saved, current)
    if diff and not allow_changes:
        raise RunError(f"{workdir} holds a run with another config; differing keys: "
                       f"{'; '.join(diff)}. Use a new --workdir, or resume anyway with "
                       f"--allow_config_change")


class StopRequest:
    """SIGTERM / SIGINT ask the loop to stop after the current step; a second SIGINT kills."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners): no handlers
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __bool__(self):
        return self.signal is not None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
