"""`import dnc_jax` sets XLA's C++ log threshold (TF_CPP_MIN_LOG_LEVEL) to 2, errors only, when
the user has not set it, before JAX loads: the GPU autotuner's "Delay kernel timed out" warnings
stay out of the console (dnc_jax/__init__.py says why). A value the user set is kept."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import os, sys; import dnc_jax; "
         "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'jax' in sys.modules)")


def _probe(**env):
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1] == "True"


def test_default_is_errors_only_and_set_before_jax_loads():
    level, jax_loaded = _probe()
    assert level == "2"
    assert not jax_loaded  # so jaxlib and the CUDA plugin read it when they load


@pytest.mark.parametrize("value", ["0", "1", "3"])
def test_a_users_value_is_kept(value):
    assert _probe(TF_CPP_MIN_LOG_LEVEL=value)[0] == value
