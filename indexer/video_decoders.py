"""The indexing run's video decoders: child processes that sample videos and stream their frames.

Each child takes one video at a time (`indexer.videos.sample_frames`), hashes it, and sends every
sampled frame back as soon as it is kept, already preprocessed for the model (the same per-image
step photos get in the decode pool), so the run embeds a video's first frames while its later ones
are still being decoded. The children are reused from video to video.

A decoder stuck inside one FFmpeg call never reaches the sampler's own time check (that runs between
packets), so the run also watches each child: a video that has not ended
`Limits.video_decode_seconds + Limits.video_stall_seconds` after it was handed over gets its child
killed (a new one takes the next video) and is reported with the reason; the frames it sent before
are kept, as the sampler keeps them when its own budget runs out. A child that dies (a decoder crash)
is reported the same way. Inside a daemon process, which may have no children, a thread decodes
instead: its video is reported when it overruns, but the thread cannot be stopped.

Nothing here prints or changes process-wide state; children die with the run that started them.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from xmodal.indexer.decode_pool import StartMethod, Work, default_start_method, file_hash, forked_safely, init_worker
from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.images import NO_SUCH_FILE
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits

__all__ = ["VideoDecoders", "DecodedVideo"]


@dataclass
class DecodedVideo:
    """What a decoder said of one video once it ended: its facts, or the reason it has no frames
    (error). `complete` is False when sampling stopped early (budget, damage, a stalled decoder)."""

    width: int = 0
    height: int = 0
    taken_at: object = None
    complete: bool = True
    error: str | None = None
    content_hash: str | None = None
    stopped: str | None = None  # why the decoder was stopped (stalled, crashed), frames or not


def _sample_into(send: Callable[[tuple], None], work: Work, transform: Callable, target: int, limits: Limits) -> None:
    """Sample one video, sending ("frame", time, pixels) per kept frame, then ("end", DecodedVideo)."""
    from xmodal.indexer.videos import sample_frames

    done = DecodedVideo(content_hash=work.content_hash)
    try:
        if done.content_hash is None:
            done.content_hash = file_hash(work.found.path)
        sampled = sample_frames(
            work.found.path, target, limits, on_frame=lambda image, t: send(("frame", t, transform(image)))
        )
        done.width, done.height, done.taken_at, done.complete = (
            sampled.width,
            sampled.height,
            sampled.taken_at,
            sampled.complete,
        )
    except ImageReadError as e:
        done.error = "file vanished after the scan (no such file)" if str(e) == NO_SUCH_FILE else str(e)
    except FileNotFoundError:
        done.error = "file vanished after the scan (no such file)"
    except OSError as e:
        done.error = f"cannot read: {e.strerror or e}"
    except Exception as e:  # a decoder bug on one hostile file must not stop the run
        done.error = f"{type(e).__name__}: {e}"
    send(("end", done))


def _child_main(conn: Any, transform: Callable, target: int, limits: Limits, run_pid: int) -> None:  # noqa: ANN401
    """A decoder child: videos in, their frames out, until it is told to stop (None) or killed."""
    from xmodal.indexer.decode_pool import _die_with_run

    _die_with_run(run_pid)
    init_worker(transform, target, limits.max_pixels, limits)
    while True:
        try:
            work = conn.recv()
        except (EOFError, OSError):
            return
        if work is None:
            return
        try:
            _sample_into(conn.send, work, transform, target, limits)
        except (BrokenPipeError, OSError):  # the run went away
            return


class _Decoder:
    """One child process (or, in a daemon process, threads) and the queue its messages arrive in."""

    def __init__(self, owner: VideoDecoders) -> None:
        self.owner = owner
        self.messages: queue.Queue[tuple] = queue.Queue()
        self.process: Any = None
        self.conn: Any = None
        if owner.in_threads:
            return
        context = multiprocessing.get_context(owner.start_method)
        parent, child = context.Pipe()
        self.process = context.Process(  # type: ignore[attr-defined]
            target=_child_main,
            args=(child, owner.transform, owner.target, owner.limits, os.getpid()),
            name="xmodal-video-decoder",
            daemon=True,
        )
        with forked_safely(owner.start_method):
            self.process.start()
        child.close()
        self.conn = parent
        threading.Thread(target=self._read, name="xmodal-video-reader", daemon=True).start()

    def _read(self) -> None:
        """Move the child's messages into the queue as they come, so it never waits on a full pipe."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.messages.put(("gone",))
                return
            self.messages.put(message)

    def start(self, work: Work) -> None:
        if self.process is None:
            owner = self.owner
            threading.Thread(
                target=_sample_into,
                args=(self.messages.put, work, owner.transform, owner.target, owner.limits),
                name="xmodal-video-decode",
                daemon=True,
            ).start()
        else:
            self.conn.send(work)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def exit_reason(self) -> str:
        if self.process is None:
            return "the decoder stopped"
        self.process.join(1.0)
        code = self.process.exitcode
        return f"the decoder stopped (exit code {code})" if code is not None else "the decoder stopped"

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if not kill:
            try:
                self.conn.send(None)
            except OSError:
                kill = True
            else:
                self.process.join(5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self.conn.close()


@dataclass
class StreamedVideo:
    """One video being decoded: `frames()` yields (time, pixels) as they arrive, then `result` holds
    what the decoder said of it."""

    work: Work
    decoder: _Decoder
    started: float
    limits: Limits
    result: DecodedVideo = field(default_factory=DecodedVideo)
    waited: float = 0.0  # seconds spent waiting for the decoder
    _ended: bool = False

    def frames(self) -> Iterator[tuple[float, Any]]:
        deadline = self.started + self.limits.video_decode_seconds + self.limits.video_stall_seconds
        received = 0
        while True:
            try:
                message = self.decoder.messages.get_nowait()
            except queue.Empty:
                clock = time.monotonic()
                try:
                    message = self.decoder.messages.get(timeout=max(0.0, deadline - clock))
                except queue.Empty:
                    message = ("stalled",)
                self.waited += time.monotonic() - clock
            kind = message[0]
            if kind == "frame":
                received += 1
                yield message[1], message[2]
                continue
            self._ended = True
            if kind == "end":
                self.result = message[1]
                return
            # stalled or died: the decoder is replaced; frames sent before are kept (partial)
            if kind == "stalled":
                reason = (
                    f"decoding stalled: stopped after {self.limits.video_decode_seconds:g} s "
                    f"(+{self.limits.video_stall_seconds:g} s grace)"
                )
            else:
                reason = self.decoder.exit_reason()
            self.decoder.owner._retire(self.decoder)
            self.result = DecodedVideo(complete=False, error=None if received else reason, stopped=reason)
            return


class VideoDecoders:
    """`count` decoder children (started as needed) for one run's videos; use as a context manager.

    `stream(work)` yields a StreamedVideo per video in order; its frames must be read (or the
    stream abandoned) before the next is asked for. Videos beyond the one being read are decoded
    ahead, one per free child."""

    def __init__(
        self,
        count: int,
        transform: Callable,
        target: int,
        limits: Limits = DEFAULT_LIMITS,
        start_method: StartMethod | None = None,
    ) -> None:
        self.count = max(1, count)
        self.transform, self.target, self.limits = transform, target, limits
        self.start_method = start_method or default_start_method()
        self.in_threads = (
            self.start_method not in multiprocessing.get_all_start_methods() or multiprocessing.current_process().daemon
        )
        if self.in_threads:
            init_worker(transform, target, limits.max_pixels, limits)
        self._idle: list[_Decoder] = []
        self._all: list[_Decoder] = []

    def __enter__(self) -> VideoDecoders:
        return self

    def __exit__(self, *exc: object) -> None:
        for decoder in self._all:
            decoder.stop(kill=exc[0] is not None)
        self._all.clear()
        self._idle.clear()

    def _retire(self, decoder: _Decoder) -> None:
        decoder.stop(kill=True)
        if decoder in self._all:
            self._all.remove(decoder)

    def _take(self) -> _Decoder:
        if self._idle:
            return self._idle.pop()
        decoder = _Decoder(self)
        self._all.append(decoder)
        return decoder

    def _begin(self, work: Work) -> StreamedVideo:
        decoder = self._take()
        decoder.start(work)
        return StreamedVideo(work, decoder, time.monotonic(), self.limits)

    def stream(self, works: list[Work]) -> Iterator[StreamedVideo]:
        todo = iter(works)
        running: deque[StreamedVideo] = deque()
        for work in todo:
            running.append(self._begin(work))
            if len(running) >= self.count:
                break
        while running:
            video = running.popleft()
            yield video
            if not video._ended:  # abandoned half-read: its decoder may still be sending
                self._retire(video.decoder)
            elif video.decoder in self._all:
                self._idle.append(video.decoder)
            following = next(todo, None)
            if following is not None:
                running.append(self._begin(following))
