"""Bug 9: files of kinds the indexer does not read (videos) are counted as skipped, by extension. Camera
RAW is read (issue 25): a `.CR2` holding no RAW LibRaw reads is a failure with LibRaw's reason."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer import Indexer
from xmodal.search.stats import failures, index_info


def _shoot(root: Path) -> Path:
    make_image(root / "IMG_0001.jpg", COLOURS["red"])
    for name in ("IMG_0001.CR2", "IMG_0002.CR2", "DSC_0003.nef", "DSC_0004.DNG", "clip.mp4", "notes.txt"):
        (root / name).write_bytes(b"\x00raw sensor data or a video, not decodable by Pillow\x00")
    return root


def test_unread_kinds_are_counted_by_extension_in_the_summary_and_in_info(tmp_path: Path) -> None:
    photos = _shoot(tmp_path / "shoot")
    summary = Indexer(tmp_path / "idx", model=fake_model(), video=False).add_paths([photos])
    assert (summary.new, summary.failed) == (1, 4)  # the four RAW names hold no RAW: LibRaw says so
    assert summary.skipped == {".mp4": 1}  # notes.txt is not a photo kind at all
    assert summary.as_dict()["skipped"] == summary.skipped
    facts = index_info(tmp_path / "idx")
    assert facts["skipped"] == summary.skipped and facts["errors"] == 4
    listed = {Path(f["path"]).name: f["reason"] for f in failures(tmp_path / "idx")}
    assert sorted(listed) == ["DSC_0003.nef", "DSC_0004.DNG", "IMG_0001.CR2", "IMG_0002.CR2", "clip.mp4"]
    assert "not a camera RAW LibRaw reads" in listed["IMG_0001.CR2"] and "video" in listed["clip.mp4"]
    # a second run re-decides them, it does not count them twice
    again = Indexer(tmp_path / "idx", model=fake_model(), video=False).add_paths([photos])
    assert (again.unchanged, again.skipped) == (1, summary.skipped)
    assert index_info(tmp_path / "idx")["skipped"] == summary.skipped


def test_cli_index_and_info_report_the_skipped_kinds(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import xmodal.indexer.indexing as indexing
    from xmodal.cli.app import app

    monkeypatch.setattr(indexing.Indexer, "_load", lambda self, store: fake_model())
    monkeypatch.setattr(indexing.Indexer, "_check_model", lambda self, store: store.check_model("fake-colour:test", 32))
    photos = _shoot(tmp_path / "shoot")
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(photos), "--no-video", "--index", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    assert "skipped 1 file(s) of kinds xmodal does not read (.mp4 1)" in result.output
    info = json.loads(runner.invoke(app, ["info", "--json", "--index", str(tmp_path / "idx")]).stdout)
    assert info["skipped"] == {".mp4": 1}
    errors = json.loads(runner.invoke(app, ["info", "--errors", "--json", "--index", str(tmp_path / "idx")]).stdout)
    reasons = sorted(e["reason"].split(" (")[0] for e in errors)
    assert reasons == ["not a camera RAW LibRaw reads"] * 4 + ["not read by xmodal: video"]
