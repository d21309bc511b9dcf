"""Under CI=true, a skipped test fails unless ALLOWED_SKIPS names it: CI installs every test
requirement (requirements-test.txt), so a skip there means a reference silently did not run.

Imported by tests/conftest.py (the hooks) and by tests/test_skip_guard.py (which runs them on
throw-away test files)."""
import os

import pytest

# nodeid prefix -> why it may skip in CI. Empty: nothing may.
ALLOWED_SKIPS: dict[str, str] = {}


def _unexpected(report) -> bool:
    if os.environ.get("CI", "").lower() not in ("true", "1"):
        return False
    if not report.skipped or hasattr(report, "wasxfail"):
        return False
    return not any(report.nodeid.startswith(prefix) for prefix in ALLOWED_SKIPS)


def _fail(report) -> None:
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, which installs every test requirement: {reason} "
                       f"(tests/skip_guard.py ALLOWED_SKIPS lists the skips CI accepts)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _unexpected(report):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _unexpected(report):
        _fail(report)
