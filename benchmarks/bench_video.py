"""Video indexing speed: seconds of video indexed per wall-clock second (goal: at least 60x real time).

    python benchmarks/bench_video.py [--minutes 2] [--codecs libx264 libx265] [--dir DIR] [--json]

Makes (once, kept in --dir) a 1080p 30 fps clip per codec with a keyframe every second, as phones
write them: real flickr photos shown 3 s each, so a scene change every 3 s (more frames than a
phone clip without cuts gets: one every 10 s); HEVC (libx265, slow to encode here) repeats each
photo's first one-second GOP for its other seconds. Then, per codec, `Indexer.add_paths` on a fresh
index with the offline default (model loaded before the clock starts) and prints:
  realtime_x         video seconds indexed per wall second (the whole run into a new index, the
                     text stage that reads the frames' text included)
  realtime_x_searchable  the same up to the end of the first stage (frames embedded and written:
                     the video is found by search; the text in its frames is read after that)
  realtime_x_existing_index   the same without making the new index's schema (timings["open"])
  cpu_seconds        CPU time of the run (all processes, the decoder children included): what a
                     busy machine's wall time hides; video_seconds_per_cpu_second is its ratio
  frames             frames sampled from the video
  timings            the run's stages (video_decode: waiting for the decoder's next frame,
                     video_embed: embedding them meanwhile, video_write: the video's transaction)
  sample_only_x      sampling alone (indexer.videos.sample_frames, one process): the decoder's ceiling
  load_average       the machine's 1-minute load before and after the run (busy machine: above ~0.5)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from xmodal.indexer import Indexer, load_model
from xmodal.indexer.videos import sample_frames

FLICKR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "flickr8k-1k" / "images"
SIZE = (1920, 1080)
FPS = 30
SECONDS_PER_PHOTO = 3


def make_clip(path: Path, minutes: float, codec: str) -> Path:
    """A 1080p30 clip of real photos, SECONDS_PER_PHOTO s each, a keyframe every second. Each photo is
    still for its segment (cheap to encode: the sampler decodes keyframes only, and those are whole
    pictures of real photos whatever moves between them), so every cut is a scene change."""
    import av

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    photos = sorted(FLICKR.glob("*.jpg"))
    frames_per_photo = SECONDS_PER_PHOTO * FPS
    total = int(minutes * 60 * FPS)
    tmp = path.with_suffix(".part" + path.suffix)
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = FPS  # one keyframe a second, as phones write them
        if codec == "libx265":
            _write_repeated_gops(container, stream, photos, total, frames_per_photo)
        else:
            stream.options = {"preset": "ultrafast"}
            frame = None
            for i in range(total):
                if i % frames_per_photo == 0:
                    frame = _yuv(photos[(i // frames_per_photo) % len(photos)])
                frame.pts = None
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    tmp.rename(path)
    return path


def _yuv(photo_path: Path):  # noqa: ANN202 - av.VideoFrame
    import av

    photo = Image.open(photo_path).convert("RGB")
    return av.VideoFrame.from_image(photo.resize(SIZE, Image.Resampling.BILINEAR)).reformat(format="yuv420p")


def _write_repeated_gops(container, stream, photos: list[Path], total: int, frames_per_photo: int) -> None:  # noqa: ANN001
    """HEVC: libx265 encodes 1080p at a few frames a second here, so each photo's first second (one
    closed GOP: a keyframe and P-frames, no B-frames) is encoded once and written for each second
    the photo stays, its times shifted: the packets a still photo's seconds get anyway."""
    import av

    stream.options = {
        "preset": "ultrafast",
        "x265-params": f"log-level=none:keyint={FPS}:min-keyint={FPS}:open-gop=0:bframes=0:scenecut=0",
    }
    seconds_per_photo = frames_per_photo // FPS
    count = -(-total // frames_per_photo)
    gops: dict[int, list] = {}
    for k in range(count):
        frame = _yuv(photos[k % len(photos)])
        for j in range(FPS):
            frame.pts = k * FPS + j
            for packet in stream.encode(frame):
                gops.setdefault(int(packet.pts) // FPS, []).append(packet)
    for packet in stream.encode():
        gops.setdefault(int(packet.pts) // FPS, []).append(packet)
    for k in range(count):
        for r in range(seconds_per_photo):
            shift = (k * seconds_per_photo + r - k) * FPS
            for packet in gops[k]:
                if packet.pts + shift >= total:
                    return
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts = packet.pts + shift, packet.dts + shift
                copy.time_base = packet.time_base
                copy.is_keyframe = packet.is_keyframe
                copy.stream = stream
                container.mux(copy)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decode workers, once the run ends)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(clip: Path, model, workdir: Path) -> dict[str, object]:  # noqa: ANN001
    duration = sample_frames(clip).duration or 0.0
    started = time.perf_counter()
    sampled = sample_frames(clip)
    sample_seconds = time.perf_counter() - started
    index = workdir / f"index-{clip.stem}"
    shutil.rmtree(index, ignore_errors=True)
    lib = workdir / f"lib-{clip.stem}"
    lib.mkdir(exist_ok=True)
    target = lib / clip.name
    if not target.exists():
        target.symlink_to(clip)
    load_before = os.getloadavg()[0]
    before = _cpu_seconds()
    summary = Indexer(index, model=model, prepare_search=False).add_paths([lib])
    cpu = _cpu_seconds() - before
    load_after = os.getloadavg()[0]
    assert summary.videos == 1, summary.failures
    return {
        "clip": clip.name,
        "video_seconds": round(duration, 1),
        "wall_seconds": round(summary.seconds, 2),
        "realtime_x": round(duration / summary.seconds, 1),
        "realtime_x_searchable": round(duration / (summary.seconds - summary.timings.get("text", 0.0)), 1),
        # the same run without making the new index's schema (once per index: timings["open"])
        "realtime_x_existing_index": round(duration / (summary.seconds - summary.timings.get("open", 0.0)), 1),
        "cpu_seconds": round(cpu, 2),
        "video_seconds_per_cpu_second": round(duration / cpu, 1),
        "frames": summary.frames,
        "timings": {k: round(v, 2) for k, v in summary.timings.items()},
        "sample_only_seconds": round(sample_seconds, 2),
        "sample_only_x": round(duration / sample_seconds, 1),
        "sampled_frames": len(sampled.times),
        "load_average": [round(load_before, 2), round(load_after, 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--codecs", nargs="+", default=["libx264", "libx265"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "xmodal-bench-video")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = load_model()
    results = []
    for codec in args.codecs:
        clock = time.perf_counter()
        clip = make_clip(args.dir / f"clip-{codec}-{args.minutes:g}min.mp4", args.minutes, codec)
        made = time.perf_counter() - clock
        result = run(clip, model, args.dir)
        result["codec"] = codec
        result["made_in_seconds"] = round(made, 1)
        results.append(result)
        if not args.json:
            print(
                f"{codec}: {result['video_seconds']} s of 1080p30 video indexed in {result['wall_seconds']} s = "
                f"{result['realtime_x']}x real time ({result['realtime_x_existing_index']}x without making the "
                f"new index; searchable at {result['realtime_x_searchable']}x, before the text stage); "
                f"{result['cpu_seconds']} CPU s ("
                f"{result['video_seconds_per_cpu_second']} video s per CPU s); {result['frames']} frames; "
                f"stages {result['timings']}; "
                f"sampling alone {result['sample_only_seconds']} s ({result['sample_only_x']}x); "
                f"load average {result['load_average']}"
            )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
