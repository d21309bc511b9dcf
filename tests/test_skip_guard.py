"""The CI skip guard (tests/skip_guard.py) on throw-away test files, in a pytest of their own."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODULE_SKIP = """
import pytest
pytest.importorskip("a_package_that_is_not_installed")

def test_never_collected():
    pass
"""
TEST_SKIP = """
import pytest

def test_skips():
    pytest.skip("no reference here")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

def test_passes():
    pass
"""


def _pytest(tmp_path, ci: str, name: str, text: str):
    (tmp_path / "conftest.py").write_text(
        "from tests.skip_guard import pytest_make_collect_report, pytest_runtest_makereport\n")
    (tmp_path / name).write_text(text)
    env = {**os.environ, "CI": ci, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path / name)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_skipped_test_fails_under_ci_and_stays_a_skip_elsewhere(tmp_path):
    ci = _pytest(tmp_path, "true", "test_one_skip.py", TEST_SKIP)
    assert ci.returncode == 1 and "1 failed, 1 passed, 1 xfailed" in ci.stdout, ci.stdout
    assert "skipped under CI=true" in ci.stdout and "no reference here" in ci.stdout
    local = _pytest(tmp_path, "", "test_one_skip.py", TEST_SKIP)
    assert local.returncode == 0 and "1 passed, 1 skipped, 1 xfailed" in local.stdout, local.stdout


def test_a_module_level_skip_is_a_collection_error_under_ci(tmp_path):
    ci = _pytest(tmp_path, "true", "test_module_skip.py", MODULE_SKIP)
    assert ci.returncode == 2 and "1 error" in ci.stdout, ci.stdout
    assert "skipped under CI=true" in ci.stdout and "a_package_that_is_not_installed" in ci.stdout
    local = _pytest(tmp_path, "", "test_module_skip.py", MODULE_SKIP)
    assert local.returncode == 5 and "1 skipped" in local.stdout, local.stdout  # nothing ran
