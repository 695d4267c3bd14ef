"""Under CI=true a skip for a missing package, browser or database fails the run; absent hardware may skip."""

from __future__ import annotations

import pytest

INNER = """
import pytest

def test_needs_a_package():
    pytest.importorskip("xmodal_no_such_package")

@pytest.mark.skipif(True, reason="no CUDA GPU")
def test_needs_a_gpu():
    pass

def test_runs():
    pass
"""
INNER_MODULE_SKIP = """
import pytest

pytest.importorskip("xmodal_no_such_package")

def test_never_collected():
    pass
"""


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_inprocess("-p", "tests.ci_rules", "-p", "no:cacheprovider")


def test_under_ci_a_missing_package_fails_and_a_missing_gpu_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = _run(pytester, monkeypatch, "true")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true*xmodal_no_such_package*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_under_ci_a_module_that_skips_whole_is_an_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_inner=INNER_MODULE_SKIP)
    result = _run(pytester, monkeypatch, "true")
    result.assert_outcomes(errors=1)
    assert result.ret != pytest.ExitCode.OK


def test_outside_ci_missing_parts_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_inner=INNER)
    _run(pytester, monkeypatch, None).assert_outcomes(passed=1, skipped=2)
