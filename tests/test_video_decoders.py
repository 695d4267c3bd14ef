"""Video decoders (indexer.video_decoders): a decoder that stops answering is killed, its video is
listed with the reason, and the run goes on with a new decoder. The stall is real: the test stops
the decoder process (SIGSTOP) as a decoder stuck inside one FFmpeg call would be."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from tests.videos import write_video
from xmodal.indexer import Indexer
from xmodal.indexer.limits import Limits
from xmodal.indexer.progress import Progress
from xmodal.search.engine import SearchEngine
from xmodal.search.stats import failures

pytest.importorskip("av")  # the `video` extra (in the test extra)

RGB = [Image.new("RGB", (64, 48), COLOURS[name]) for name in ("red", "green", "blue")]


def _decoders() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == "xmodal-video-decoder"]


@pytest.mark.slow  # ~4 s: a second and a half of it is the stall
@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX")
def test_a_stalled_decoder_is_killed_its_video_listed_and_the_run_goes_on(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(lib / name, RGB)
    make_image(lib / "photo.jpg", COLOURS["yellow"])
    stopped: list[int] = []

    def stop_the_decoder(progress: Progress) -> None:
        """After the first video, the one decoder (workers=1) is idle: stopped now, it never
        answers for the second video, as a decoder stuck inside FFmpeg would not."""
        if progress.stage == "videos" and progress.done == 1 and not stopped:
            (decoder,) = _decoders()
            os.kill(decoder.pid, signal.SIGSTOP)  # type: ignore[arg-type]
            stopped.append(decoder.pid)  # type: ignore[arg-type]

    limits = Limits(video_decode_seconds=1.0, video_stall_seconds=0.5)
    clock = time.monotonic()
    summary = Indexer(
        tmp_path / "idx", model=fake_model(), workers=1, limits=limits, on_progress=stop_the_decoder
    ).add_paths([lib])
    assert time.monotonic() - clock < 30
    assert stopped
    reasons = {Path(f["path"]).name: f["reason"] for f in failures(tmp_path / "idx")}
    assert reasons == {"b.mp4": "decoding stalled: stopped after 1 s (+0.5 s grace)"}
    assert (summary.videos, summary.new, summary.failed) == (2, 3, 1)  # a, c and the photo
    assert not _decoders()  # the stopped one was killed, the new one ended with the run
    with pytest.raises(ProcessLookupError):
        os.kill(stopped[0], 0)


def test_a_jpg_that_is_an_mp4_is_indexed_as_a_video(tmp_path: Path) -> None:
    """Files are decided by content: the scan takes a `.jpg` for a photo without opening it, the
    photo decoder finds a video inside, and the run reads it as one."""
    lib = tmp_path / "lib"
    write_video(lib / "clip.mp4", RGB).rename(lib / "clip.jpg")
    make_image(lib / "photo.jpg", COLOURS["yellow"])
    summary = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])
    assert (summary.new, summary.videos, summary.failed, summary.skipped) == (2, 1, 0, {})
    assert failures(tmp_path / "idx") == []
    with SearchEngine.open(tmp_path / "idx", model=fake_model()) as engine:
        (hit,) = engine.search("green", k=1)
    assert Path(hit.path).name == "clip.jpg" and hit.kind == "video"
    assert hit.time is not None and 3.0 <= hit.time < 6.0
    again = Indexer(tmp_path / "idx", model=fake_model()).add_paths([lib])  # unchanged: not decoded again
    assert (again.new, again.unchanged, again.videos) == (0, 2, 0)


@pytest.mark.slow
@pytest.mark.ray
def test_the_ray_path_samples_and_embeds_videos_as_the_local_run_does(tmp_path: Path) -> None:
    """`--ray`: each video is sampled in a Ray task with the local run's own function and its frames
    embedded by the model actors; the rows, the frames' times and vectors equal a local run's."""
    ray = pytest.importorskip("ray")
    import shutil
    import tempfile

    from sqlalchemy import select

    from xmodal.indexer.distributed import RayOptions
    from xmodal.indexer.store.index_store import IndexStore
    from xmodal.indexer.store.schema import FrameRow, ImageRow, blob_to_vector

    lib = tmp_path / "lib"
    write_video(lib / "a.mp4", RGB)
    write_video(lib / "b.mkv", RGB[::-1] * 2, codec="libx265")
    write_video(lib / "clip.mp4", RGB).rename(lib / "clip.jpg")  # a .jpg that is an MP4
    (lib / "empty.mp4").write_bytes(b"")
    make_image(lib / "photo.jpg", COLOURS["yellow"])

    def rows(index: Path) -> dict[str, tuple]:
        store = IndexStore.open(index)
        try:
            with store.metadata.session() as s:
                out = {}
                for r in s.scalars(select(ImageRow)):
                    frames = s.execute(
                        select(FrameRow.time, FrameRow.vector).where(FrameRow.item_id == r.id).order_by(FrameRow.time)
                    ).all()
                    out[Path(r.path).name] = (
                        (r.media, r.width, r.height, r.content_hash),
                        blob_to_vector(r.vector).copy(),
                        [f.time for f in frames],
                        [blob_to_vector(f.vector).copy() for f in frames],
                    )
                return out
        finally:
            store.close()

    local = Indexer(tmp_path / "local", model=fake_model(), batch_size=2).add_paths([lib])
    temp = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # Ray's sockets need a short path
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        remote = Indexer(tmp_path / "ray", model=fake_model(), batch_size=2, ray=RayOptions(decode_batch=2))
        summary = remote.add_paths([lib])
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert (summary.new, summary.videos, summary.frames, summary.failed) == (
        local.new,
        local.videos,
        local.frames,
        local.failed,
    )
    assert (local.new, local.videos, local.failed) == (4, 3, 1)
    assert dict(summary.failures) == dict(local.failures)
    assert "video_cluster" in summary.timings and "video_decode" not in summary.timings  # sampled on Ray
    want, got = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert want.keys() == got.keys()
    for name, (facts, vector, times, vectors) in want.items():
        assert got[name][0] == facts and got[name][2] == times, name
        assert np.allclose(got[name][1], vector, atol=1e-5), name
        assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(got[name][3], vectors, strict=True)), name
