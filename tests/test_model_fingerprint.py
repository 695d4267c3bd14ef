"""`model_fingerprint` hashes several MB of heads and priors: once per process and file version,
keyed by each file's path, size and mtime, not on every open of an index (issue 24)."""

from __future__ import annotations

import os
from pathlib import Path

from xmodal.indexer.models.spec import model_fingerprint, parse_model_spec, towers_fingerprint


def test_a_fingerprint_is_hashed_once_per_file_version(tmp_path: Path) -> None:
    head = tmp_path / "head.pt"
    head.write_bytes(b"a" * 4096)
    spec = parse_model_spec(f"xmodal-lite+{head}")
    first = model_fingerprint(spec)
    st = head.stat()

    # the same size and mtime: the remembered fingerprint stands (the content is not read again)
    head.write_bytes(b"b" * 4096)
    os.utime(head, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_fingerprint(spec) == first

    # a file written again (a new mtime) is hashed again
    os.utime(head, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = model_fingerprint(spec)
    assert second != first
    head.write_bytes(b"a" * 4096)
    os.utime(head, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))
    assert model_fingerprint(spec) == first  # the content decides, as before


def test_towers_fingerprint_ignores_the_head(tmp_path: Path) -> None:
    head = tmp_path / "head.pt"
    head.write_bytes(b"x")
    assert towers_fingerprint(parse_model_spec(f"xmodal-lite+{head}")) == towers_fingerprint(parse_model_spec(None))
