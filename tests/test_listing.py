"""`--from-list`: the files to index come from a listing (.txt or .parquet) instead of a walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes import fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.listing import read_listing
from xmodal.indexer.scanning import FoundFile, SkippedFile


def test_text_listing_indexes_the_listed_files_only(tmp_path: Path, photo_dir: Path) -> None:
    listing = tmp_path / "paths.txt"
    listing.write_text(
        "# made by find\n"
        f"{photo_dir / 'red.jpg'}\n"
        f"{os.path.relpath(photo_dir / 'sub' / 'green.png', tmp_path)}\n"  # relative to the listing's folder
        f"{photo_dir / 'red.jpg'}\n"  # listed twice, indexed once
        f"{photo_dir / 'gone.jpg'}\n"
        "\n"
    )
    items = list(read_listing(listing))
    assert [type(i).__name__ for i in items] == ["FoundFile", "FoundFile", "SkippedFile"]
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([], listing=read_listing(listing))
    assert (summary.new, summary.failed) == (2, 1)
    assert summary.failures == [(str(photo_dir / "gone.jpg"), "no such file or folder")]
    again = Indexer(tmp_path / "idx", model=fake_model()).add_paths([], listing=read_listing(listing))
    assert (again.new, again.unchanged, again.removed) == (0, 2, 0)


def test_parquet_listing_with_facts_skips_the_stat(tmp_path: Path, photo_dir: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    files = sorted(p for p in photo_dir.rglob("*") if p.is_file())
    table = pa.table(
        {
            "path": [str(p) for p in files],
            "size": [p.stat().st_size for p in files],
            "mtime_ns": [p.stat().st_mtime_ns for p in files],
        }
    )
    pq.write_table(table, tmp_path / "paths.parquet")
    items = list(read_listing(tmp_path / "paths.parquet"))
    assert all(isinstance(i, FoundFile) for i in items) and len(items) == len(files)
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths(
        [photo_dir], listing=read_listing(tmp_path / "paths.parquet")
    )
    assert summary.new == len(files)
    # with the folder as the run's root, a file that leaves the listing leaves the index
    pq.write_table(table.slice(1), tmp_path / "paths.parquet")
    after = Indexer(tmp_path / "idx", model=fake_model()).add_paths(
        [photo_dir], listing=read_listing(tmp_path / "paths.parquet")
    )
    assert (after.removed, after.unchanged) == (1, len(files) - 1)


def test_unusable_listings_are_refused(tmp_path: Path) -> None:
    from xmodal.indexer.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not found"):
        list(read_listing(tmp_path / "nope.txt"))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": ["http://x"]}), tmp_path / "bad.parquet")
    with pytest.raises(InvalidInputError, match="no path column"):
        list(read_listing(tmp_path / "bad.parquet"))
    (tmp_path / "fifo.jpg").touch()
    os.remove(tmp_path / "fifo.jpg")
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "list.txt").write_text(str(tmp_path / "fifo.jpg") + "\n")
    assert isinstance(next(read_listing(tmp_path / "list.txt")), SkippedFile)


def test_cli_ray_and_listing_options(tmp_path: Path, photo_dir: Path) -> None:
    """`--ray` alone means a local cluster; a PATH swallowed as its value goes back to the PATHs."""
    from xmodal.cli.scale_options import bare_ray_flag, ray_options

    assert bare_ray_flag(["index", "/p", "--ray"]) == ["index", "/p", "--ray", "local"]
    assert bare_ray_flag(["index", "--ray", "--json", "/p"]) == ["index", "--ray", "local", "--json", "/p"]
    assert bare_ray_flag(["index", "/p", "--ray", "auto"]) == ["index", "/p", "--ray", "auto"]
    paths: list[Path] = []
    options = ray_options(str(photo_dir), paths)
    assert options is not None and options.address is None and paths == [photo_dir]
    assert ray_options("auto", []).address == "auto"  # type: ignore[union-attr]
    assert ray_options("ray://head:10001", []).address == "ray://head:10001"  # type: ignore[union-attr]
    assert ray_options(None, []) is None

    from typer.testing import CliRunner

    from xmodal.cli.app import app

    result = CliRunner().invoke(app, ["index", "--index", str(tmp_path / "idx")])
    assert result.exit_code == 2 and "--from-list" in result.output
    result = CliRunner().invoke(
        app, ["index", "--from-list", str(tmp_path / "missing.txt"), "--index", str(tmp_path / "idx")]
    )
    assert result.exit_code == 2 and "not found" in result.output
