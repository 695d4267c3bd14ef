"""A pytest plugin (loaded by tests/conftest.py): under CI=true a skip fails the run, unless it names
hardware or a platform feature this machine lacks.

A missing package, browser, database or data set skips on a developer's machine but must never let
CI pass with parts of the suite unrun; `.ci/run` sets CI=true itself.
"""

from __future__ import annotations

import os
import re

import pytest

__all__ = ["in_ci", "may_skip_in_ci"]

# What CI may lack: a GPU (CUDA, Apple MPS, GPU FAISS), OS features (nice(), a non-root user),
# and a case a parametrised test rules out by design (a PostgreSQL run of a SQLite-only check).
_HARDWARE_OR_PLATFORM = re.compile(r"\bGPU\b|CUDA|\bMPS\b|nice\(\)|root reads|overrides a recorded URL", re.IGNORECASE)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def may_skip_in_ci(reason: str, gpu_test: bool = False) -> bool:
    return gpu_test or bool(_HARDWARE_OR_PLATFORM.search(reason))


def _fail_if_ci_skip(report: pytest.CollectReport | pytest.TestReport, gpu_test: bool) -> None:
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not may_skip_in_ci(reason, gpu_test):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where only absent hardware may skip: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report: pytest.TestReport = yield
    _fail_if_ci_skip(report, gpu_test=item.get_closest_marker("gpu") is not None)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    """A module that skips as a whole (importorskip, allow_module_level) is a collection report."""
    report: pytest.CollectReport = yield
    _fail_if_ci_skip(report, gpu_test=False)
    return report
