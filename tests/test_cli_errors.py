"""The CLI's error paths: one `xmodal: error: ...` line, the exit code of indexer/errors.py, never a
traceback.

Exit codes: 1 nothing could be indexed / problems found by `check`; 2 bad query or usage;
3 model cannot be loaded; 4 no (or a foreign) index; 5 model mismatch; 6 index locked.

Which checks happen before a model is loaded (so they need no model at all): an empty or blank
query, a missing or foreign index, --model differing from the index's model (search and index),
an unreadable query image (decoded before the model is asked for), unknown options. The fake
encoder's spec ("fake-colour:test") is unknown to load_model, so tests that need a model to run
(long queries, exit codes of `index`) patch load_model to return the fake encoder for that spec.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import xmodal.indexer.indexing
import xmodal.indexer.models.embedding
from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.cli.app import _run, app
from xmodal.cli.check_command import check
from xmodal.indexer import Indexer

FAKE_SPEC = "fake-colour:test"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def fake_index(tmp_path: Path, photo_dir: Path) -> Path:
    index_dir = tmp_path / "idx"
    Indexer(index_dir, model=fake_model()).add_paths([photo_dir])
    return index_dir


@pytest.fixture
def fake_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_model(FAKE_SPEC) gives the fake encoder, for the CLI paths that do need a model."""
    real = xmodal.indexer.models.embedding.load_model

    def load(spec=None, device="auto"):  # noqa: ANN001, ANN202
        return fake_model() if str(spec) == FAKE_SPEC else real(spec, device)

    monkeypatch.setattr(xmodal.indexer.models.embedding, "load_model", load)
    # indexer.indexing imports load_model from indexer.models at the moment it needs a model


def _one_error_line(result, code: int, *needles: str) -> str:  # noqa: ANN001
    output = result.output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, output)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("xmodal: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("query", ["", "   ", "\t\n "])
def test_empty_query(runner: CliRunner, fake_index: Path, query: str) -> None:
    _one_error_line(runner.invoke(app, ["search", query, "--index", str(fake_index)]), 2, "empty")


def test_neither_query_nor_image(runner: CliRunner, fake_index: Path) -> None:
    _one_error_line(runner.invoke(app, ["search", "--index", str(fake_index)]), 2, "--image")


def test_missing_index(runner: CliRunner, tmp_path: Path) -> None:
    for command in (["search", "red"], ["info"], ["info", "--errors"]):
        result = runner.invoke(app, [*command, "--index", str(tmp_path / "nope")])
        _one_error_line(result, 4, "no xmodal index", "no such folder")


def test_foreign_indexes(runner: CliRunner, tmp_path: Path) -> None:
    plain = tmp_path / "plain"  # a folder with other things in it
    plain.mkdir()
    (plain / "notes.txt").write_text("hello")
    _one_error_line(runner.invoke(app, ["search", "red", "--index", str(plain)]), 4, "no xmodal index")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _one_error_line(runner.invoke(app, ["search", "red", "--index", str(a_file)]), 4)
    bad_settings = tmp_path / "bad-settings"
    bad_settings.mkdir()
    (bad_settings / "xmodal.json").write_text("{ not json")
    _one_error_line(runner.invoke(app, ["search", "red", "--index", str(bad_settings)]), 4, "unreadable")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "xmodal.json").write_text('{"schema": 999}')
    _one_error_line(runner.invoke(app, ["search", "red", "--index", str(newer)]), 4, "newer xmodal")
    garbage_db = tmp_path / "garbage-db"
    garbage_db.mkdir()
    (garbage_db / "xmodal.json").write_text('{"schema": 1, "db_url": null}')
    (garbage_db / "index.db").write_bytes(os.urandom(4096))
    _one_error_line(
        runner.invoke(app, ["search", "red", "--index", str(garbage_db)]), 4, "cannot open the index database"
    )


def test_model_mismatch_is_found_before_loading_a_model(runner: CliRunner, fake_index: Path, photo_dir: Path) -> None:
    result = runner.invoke(app, ["search", "red", "--index", str(fake_index), "--model", "ViT-B-32:openai"])
    _one_error_line(result, 5, "built with model", FAKE_SPEC)
    result = runner.invoke(app, ["index", str(photo_dir), "--index", str(fake_index), "--model", "ViT-B-32:openai"])
    _one_error_line(result, 5, "built with model", FAKE_SPEC)


def test_malformed_model_spec(runner: CliRunner, fake_index: Path) -> None:
    result = runner.invoke(app, ["search", "red", "--index", str(fake_index), "--model", "no-colon-here"])
    _one_error_line(result, 3, "model spec")


def test_unreadable_query_images(runner: CliRunner, fake_index: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.jpg"
    text.write_text("not a picture")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # must not block
    cases = {text: "not a recognised image", empty: "empty", folder: "directory", fifo: "not a regular file"}
    for path, reason in cases.items():
        result = runner.invoke(app, ["search", "--image", str(path), "--index", str(fake_index)])
        _one_error_line(result, 2, "query image", reason)
    # issue 24: a file that never existed was reported as one that "vanished"
    result = runner.invoke(app, ["search", "--image", "missing.jpg", "--index", str(fake_index)])
    assert _one_error_line(result, 2).endswith("no such file: missing.jpg")
    result = runner.invoke(app, ["search", "~nosuchuser/x.jpg", "--index", str(fake_index)])
    assert _one_error_line(result, 2).endswith("no such file: ~nosuchuser/x.jpg")


def test_unknown_users_and_huge_sizes_are_one_line(runner: CliRunner, fake_index: Path) -> None:
    """Issue 24: `--under '~nosuchuser/x'` was a 51-line traceback, --min-size 99999999999999999999x1 an
    SQLite overflow."""
    result = runner.invoke(app, ["search", "red", "--under", "~nosuchuser/x", "--index", str(fake_index)])
    _one_error_line(result, 2, "~nosuchuser/x")
    result = runner.invoke(app, ["search", "red", "--min-size", "99999999999999999999x1", "--index", str(fake_index)])
    _one_error_line(result, 2, "--min-size")
    for date in ("June 5", "not a date"):
        result = runner.invoke(app, ["search", "red", "--after", date, "--index", str(fake_index)])
        _one_error_line(result, 2, date)


def test_unknown_option_and_command(runner: CliRunner, fake_index: Path) -> None:
    for args in (
        ["search", "red", "--bogus"],
        ["frobnicate"],
        ["search", "red", "--limit", "zero"],
        ["search", "red", "--limit", "0"],
    ):
        result = runner.invoke(app, [*args, "--index", str(fake_index)])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert "Error" in result.output or "error" in result.output


@pytest.mark.slow
def test_very_long_and_odd_text_queries_work(runner: CliRunner, fake_index: Path, fake_loader: None) -> None:
    for query in ["red " * 50_000, "blue\x00\x01 ☃ " * 100, "-", "+ +", '"unbalanced']:
        result = runner.invoke(app, ["search", query, "--index", str(fake_index), "--json"])
        assert "Traceback" not in result.output
        assert result.exit_code in (0, 2), (query[:20], result.output)
        if result.exit_code == 2:
            _one_error_line(result, 2)
    result = runner.invoke(app, ["search", "red " * 50_000, "--index", str(fake_index), "--json"])
    assert result.exit_code == 0 and "red.jpg" in result.output


def test_index_exit_codes(runner: CliRunner, tmp_path: Path, fake_loader: None) -> None:
    good = tmp_path / "good"
    make_image(good / "a.jpg", COLOURS["red"])
    (good / "broken.jpg").write_bytes(b"garbage")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("text")
    (bad / "y.jpg").write_bytes(b"")
    index_dir = tmp_path / "idx"
    result = runner.invoke(app, ["index", str(good), "--index", str(index_dir), "--model", FAKE_SPEC])
    assert result.exit_code == 0, result.output  # some files failed: still a success
    assert "1 file(s) failed" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["index", str(bad), "--index", str(index_dir)])
    assert result.exit_code == 1, result.output  # nothing could be indexed
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["info", "--errors", "--index", str(index_dir)])
    assert result.exit_code == 0
    lines = sorted(result.output.strip().splitlines())
    assert len(lines) == 3 and all(": " in line for line in lines)
    assert any(line.startswith(str(bad / "y.jpg")) and "empty" in line for line in lines)
    # the index itself cannot be written: a file where the index folder should be
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = runner.invoke(app, ["index", str(good), "--index", str(blocker), "--model", FAKE_SPEC])
    _one_error_line(result, 4, "is a file")


def test_tag_fails_with_one_line_per_unreadable_file(runner: CliRunner, tmp_path: Path, fake_loader: None) -> None:
    """Issue 24: `tag` on a video printed an error and exited 0."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    result = runner.invoke(app, ["tag", str(video), "--labels", "red,blue", "--model", FAKE_SPEC])
    _one_error_line(result, 1, str(video))
    red = make_image(tmp_path / "red.jpg", COLOURS["red"])
    result = runner.invoke(app, ["tag", str(red), str(video), "--labels", "red,blue", "--model", FAKE_SPEC])
    assert result.exit_code == 1 and result.output.splitlines()[0].startswith(f"{red}: red ")
    assert result.output.splitlines()[1].startswith(f"xmodal: error: {video}: ")
    result = runner.invoke(app, ["tag", str(red), str(video), "--labels", "red,blue", "--model", FAKE_SPEC, "--json"])
    assert result.exit_code == 1 and "error" in result.output
    result = runner.invoke(app, ["tag", str(tmp_path / "gone.jpg"), "--labels", "red,blue", "--model", FAKE_SPEC])
    _one_error_line(result, 1, "gone.jpg: no such file")
    result = runner.invoke(app, ["tag", str(red), "--labels", "red,blue", "--model", FAKE_SPEC])
    assert result.exit_code == 0


@pytest.mark.slow
def test_model_that_cannot_load(runner: CliRunner, fake_index: Path) -> None:
    """The index names a model this machine cannot load (the fake one, unpatched): exit 3."""
    result = runner.invoke(app, ["search", "red", "--index", str(fake_index)])
    _one_error_line(result, 3, "fake-colour")


# --- xmodal check -----------------------------------------------------------------------------------
@pytest.fixture
def check_app() -> typer.Typer:
    """`check` registered the way cli.app registers it."""
    local = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    local.command("check")(_run(check))

    @local.command("noop")
    def _noop() -> None:  # a second command, so `check` is addressed by name as in xmodal
        pass

    return local


def test_check_command(
    runner: CliRunner, check_app: typer.Typer, fake_index: Path, photo_dir: Path, tmp_path: Path
) -> None:
    result = runner.invoke(check_app, ["check", "--index", str(fake_index)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "ok"
    (photo_dir / "red.jpg").unlink()
    result = runner.invoke(check_app, ["check", "--index", str(fake_index)])
    assert result.exit_code == 1 and "1 files that no longer exist" in result.output and "red.jpg" in result.output
    result = runner.invoke(check_app, ["check", "--index", str(fake_index), "--repair"])
    assert result.exit_code == 1  # rows of missing files are kept unless asked
    result = runner.invoke(check_app, ["check", "--index", str(fake_index), "--repair", "--prune-missing", "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.output)
    assert report["ok"] is True and report["images"] == 3 and report["repaired"]
    result = runner.invoke(check_app, ["check", "--index", str(tmp_path / "none")])
    _one_error_line(result, 4, "no xmodal index")


def test_a_query_not_in_english_says_how_it_is_read(runner: CliRunner, fake_index: Path, fake_loader: None) -> None:
    """Issue 29: a Chinese query's English reading (and words not understood) and a language not
    understood yet are each one line on stderr; the search still runs."""
    result = runner.invoke(app, ["search", "海边的狗", "--index", str(fake_index), "--json"])
    assert result.exit_code == 0, result.output
    assert 'xmodal: searching "海边的狗", read as "' in result.stderr and "dog" in result.stderr
    result = runner.invoke(app, ["search", "海边的狗 鑫鑫鑫", "--index", str(fake_index), "--json"])
    assert "not understood: " in result.stderr
    result = runner.invoke(app, ["search", "ビーチの犬", "--index", str(fake_index), "--json"])
    assert result.exit_code == 0 and "; note: " in result.stderr and "not understood yet" in result.stderr
    result = runner.invoke(app, ["search", "red", "--index", str(fake_index), "--json"])
    assert "read as" not in result.stderr and "note" not in result.stderr  # English needs no reading
    result = runner.invoke(app, ["search", "海边的狗", "--literal", "--index", str(fake_index), "--json"])
    assert result.exit_code == 0 and 'xmodal: searching "海边的狗", read as "' in result.stderr  # one line too
