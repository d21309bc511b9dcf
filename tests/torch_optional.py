"""torch, when installed: the tests that compare with it carry `needs_torch`, the rest of their
module runs without it (and tests/skip_guard.py fails a skip under CI=true, where it is
installed)."""
import pytest

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch (CPU) is the parity reference; "
                                 "`make test` installs it from requirements-test.txt")
