"""The indexing run's decode stage: worker processes that hash, decode and preprocess photos.

The workers stop at the model's per-image preprocessing (uint8 pixels, see models.preprocess:
split_numpy for an exported image path, split_transform for the torchvision models), so a batch
crosses the process boundary small.
fork on Linux keeps today's throughput (workers share the loaded modules and start at once);
spawn, the default on macOS and Windows and forced in tests on Linux, pickles the transform and
lets each worker import what it needs once, when the pool starts.

The public surface is what a source of work needs, whatever runs it (this pool, Ray tasks):
`Work` in, `prepare` (after `init_worker`) to `Prepared` out, `decode_size` for the model's input.
Worker processes die with the run that started them (`kill -9` of `xmodal index` included).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import multiprocessing
import os
import select
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.images import NO_SUCH_FILE, decode_image
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.paths import OPEN_NONBLOCK
from xmodal.indexer.scanning import FoundFile

if TYPE_CHECKING:
    import torch

__all__ = [
    "StartMethod",
    "Work",
    "Prepared",
    "default_start_method",
    "decode_pool",
    "decode_size",
    "file_hash",
    "init_worker",
    "prefetch",
    "prepare",
    "PreparedVideo",
    "prepare_video",
]


# A photo's size plus its first and last 256 KiB identify it (headers, EXIF and entropy-coded
# data differ between any two real photos); reading whole 12-MP files would cost as much as decoding.
_HASH_SPAN = 256 * 1024


def file_hash(path: Path) -> str:
    """Content hash used to recognise a moved or renamed file."""
    digest = hashlib.blake2b(digest_size=20)
    # O_NONBLOCK: a FIFO swapped in after the scan must not block the run (no effect on files)
    with open(os.open(path, os.O_RDONLY | OPEN_NONBLOCK | getattr(os, "O_CLOEXEC", 0)), "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file (FIFO, socket or device)")
        digest.update(st.st_size.to_bytes(8, "little"))
        digest.update(f.read(_HASH_SPAN))
        if st.st_size > 2 * _HASH_SPAN:
            f.seek(-_HASH_SPAN, os.SEEK_END)
        digest.update(f.read(_HASH_SPAN))
    return digest.hexdigest()


@dataclass
class Work:
    """A file to embed; row_id set when it replaces an existing row (a changed file)."""

    found: FoundFile
    row_id: int | None
    content_hash: str | None = None


@dataclass
class Prepared:
    """A decoded file ready for the model (pixels), or the reason it is not (error)."""

    work: Work
    pixels: np.ndarray | torch.Tensor | None = None  # per_image output of the split transform
    width: int = 0
    height: int = 0
    taken_at: object = None
    error: str | None = None
    seconds: float = 0.0


def decode_size(transform: Callable) -> int:
    """The model's input size: JPEG draft decoding stops at the first scale at least this large."""
    size = 224
    for t in getattr(transform, "transforms", []):
        s = getattr(t, "size", None)
        if isinstance(s, int):
            size = max(size, s)
        elif isinstance(s, Sequence) and s:
            size = max(size, int(max(s)))
    return size


# Set once per worker process by init_worker: the model's preprocessing, decode size and pixel cap.
_WORKER_TRANSFORM: Callable | None = None
_WORKER_TARGET = 224
_WORKER_MAX_PIXELS = DEFAULT_LIMITS.max_pixels
_WORKER_LIMITS = DEFAULT_LIMITS  # the other bounds of a decode (RAW file bytes, time)
_WORKER_NICED = False  # this worker process has lowered its priority


def init_worker(
    transform: Callable, target: int, max_pixels: int = DEFAULT_LIMITS.max_pixels, limits: Limits = DEFAULT_LIMITS
) -> None:
    """Make this process (or thread pool) ready to `prepare` work for a model's transform; cheap
    to call again (a Ray worker calls it for every task)."""
    global _WORKER_TRANSFORM, _WORKER_TARGET, _WORKER_MAX_PIXELS, _WORKER_LIMITS, _WORKER_NICED
    _WORKER_TRANSFORM, _WORKER_TARGET, _WORKER_MAX_PIXELS = transform, target, max_pixels
    _WORKER_LIMITS = limits
    # One intra-op thread: torch ops on one small image cost more in thread sync than work. Only
    # where the transform brought torch in: a Pillow and NumPy transform must not pay its import.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    # Decoding yields to the model: a preempted OpenMP thread stalls the whole forward pass
    # (measured: +4% images/s on 2 cores). Windows has no nice(); its workers keep normal priority.
    # Once per process: a Ray worker comes here again for every task (nice() adds up).
    if not _WORKER_NICED and multiprocessing.current_process().name != "MainProcess" and hasattr(os, "nice"):
        os.nice(10)
        _WORKER_NICED = True
        # LibRaw's OpenMP on one thread: a forked worker of a process that had used it deadlocks otherwise
        from xmodal.indexer.raw import single_threaded_libraw

        single_threaded_libraw()


StartMethod = Literal["fork", "spawn", "forkserver"]


def default_start_method() -> StartMethod:
    """fork on Linux (as PyTorch's DataLoader: workers share the loaded modules and start at once);
    spawn elsewhere: macOS calls fork unsafe once system frameworks are loaded, Windows has none."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


# Linux's prctl option: a signal this process gets when the thread that made it exits.
_PR_SET_PDEATHSIG = 1
_PARENT_POLL_S = 1.0


def _die_with_run(run_pid: int) -> None:
    """A worker process's first step. Objects it inherited from a forked parent are never collected
    here (gc.freeze): their destructors would wait on threads that do not exist in the child (an
    onnxruntime session left in a reference cycle by the parent hung a forked worker's first
    import in pthread_cond_destroy).

    A decode worker must not outlive its run: after `kill -9` of the run it would wait on its
    task queue forever (the queue's other end stays open in its sibling workers). Under forkserver
    its parent is the fork server, which in turn waits for its children to close their end of its
    pipe, so the worker watches the run itself: a pidfd where there is one (Linux), else the
    parent changing. Linux also has the kernel kill it with its parent (PR_SET_PDEATHSIG)."""
    gc.freeze()
    gc.enable()  # the parent forked with collection off (`forked_safely`)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watch thread below still ends it
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    pidfd_open = getattr(os, "pidfd_open", None)
    run_fd = None
    if pidfd_open is not None:
        try:
            run_fd = pidfd_open(run_pid)
        except OSError:  # the run is gone already (or pidfds are refused): exit, or watch the parent
            if run_pid not in (parent, os.getpid()) and not _alive(run_pid):
                os._exit(1)

    def watch() -> None:
        if run_fd is not None:
            select.select([run_fd], [], [])  # readable once the run has exited
            os._exit(1)
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="xmodal-run-watch", daemon=True).start()


@contextlib.contextmanager
def forked_safely(method: str) -> Iterator[None]:
    """Around the forking of workers: no garbage collection runs in the parent meanwhile, so none
    starts in a child before its first step freezes what it inherited. The at-fork hooks of other
    libraries allocate in the child (filelock's did) and could start one; it then ran the
    destructor of an onnxruntime session a dropped server app had left in a cycle, and the worker
    hung. The child inherits collection off and turns it on after freezing (`_die_with_run`), as
    the gc module's documentation advises for fork; the parent's setting is restored when the last
    of the threads forking at once is done (a server's indexing job and its watcher may)."""
    if method != "fork":
        yield
        return
    with _FORKING.lock:
        if _FORKING.threads == 0:
            _FORKING.restore = gc.isenabled()
            gc.disable()
        _FORKING.threads += 1
    try:
        yield
    finally:
        with _FORKING.lock:
            _FORKING.threads -= 1
            if _FORKING.threads == 0 and _FORKING.restore:
                gc.enable()


@dataclass
class _Forking:
    """Threads inside `forked_safely`, and whether collection was on before the first of them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: int = 0
    restore: bool = False


_FORKING = _Forking()


def _started() -> None:
    """A task that does nothing: submitting it forks a pool's workers (all at once, under fork)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # POSIX only: signal 0 checks the process exists (Linux callers only)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _start_worker(transform: Callable, target: int, max_pixels: int, run_pid: int, limits: Limits) -> None:
    """The pool's initializer in each worker process."""
    _die_with_run(run_pid)
    init_worker(transform, target, max_pixels, limits)


def decode_pool(
    workers: int,
    transform: Callable,
    target: int,
    start_method: StartMethod | None = None,
    max_pixels: int = DEFAULT_LIMITS.max_pixels,
    limits: Limits = DEFAULT_LIMITS,
) -> Executor:
    """Worker processes that decode, hash and preprocess photos while the model runs.

    Each worker runs torch with a single thread. Under spawn the transform travels pickled (the
    models' transforms are built of importable, picklable steps) and each worker imports what it
    needs once, when the pool starts. Inside a daemon process, which may have no children, the
    work runs in threads instead.
    """
    method = start_method or default_start_method()
    if method in multiprocessing.get_all_start_methods() and not multiprocessing.current_process().daemon:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_start_worker,
            initargs=(transform, target, max_pixels, os.getpid(), limits),
        )
        with forked_safely(method):
            pool.submit(_started)  # the workers start now, inside the guard
        return pool
    init_worker(transform, target, max_pixels, limits)
    return ThreadPoolExecutor(max_workers=workers)


def prepare(work: Work) -> Prepared:
    """Hash (when not yet), decode and preprocess one file; never raises for a bad file."""
    transform, target = _WORKER_TRANSFORM, _WORKER_TARGET
    if transform is None:
        raise RuntimeError("prepare() before init_worker() in this process")
    started = time.perf_counter()
    try:
        if work.content_hash is None:
            work.content_hash = file_hash(work.found.path)
        decoded = decode_image(work.found.path, target, _WORKER_MAX_PIXELS, limits=_WORKER_LIMITS)
        pixels = transform(decoded.image)
        return Prepared(
            work, pixels, decoded.width, decoded.height, decoded.taken_at, seconds=time.perf_counter() - started
        )
    except ImageReadError as e:
        # the scan saw the file: gone now, it vanished (a path never there is just "no such file")
        reason = "file vanished after the scan (no such file)" if str(e) == NO_SUCH_FILE else str(e)
        return Prepared(work, error=reason, seconds=time.perf_counter() - started)
    except FileNotFoundError:  # hashing, before the decoder
        return Prepared(
            work, error="file vanished after the scan (no such file)", seconds=time.perf_counter() - started
        )
    except OSError as e:
        return Prepared(work, error=f"cannot read: {e.strerror or e}", seconds=time.perf_counter() - started)
    except Exception as e:  # a decoder bug on one hostile file must not stop the run
        return Prepared(work, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - started)


@dataclass
class PreparedVideo:
    """A video's sampled frames ready for the model (one `pixels` entry per frame, at `times`
    seconds), or the reason it has none (error)."""

    work: Work
    pixels: list = field(default_factory=list)  # per_image outputs of the split transform, one per frame
    times: list[float] = field(default_factory=list)
    width: int = 0
    height: int = 0
    taken_at: object = None
    complete: bool = True
    error: str | None = None
    seconds: float = 0.0


def prepare_video(work: Work, limits: Limits = DEFAULT_LIMITS) -> PreparedVideo:
    """Hash (when not yet), sample and preprocess one video's frames; never raises for a bad file."""
    from xmodal.indexer.videos import sample_frames

    transform, target = _WORKER_TRANSFORM, _WORKER_TARGET
    if transform is None:
        raise RuntimeError("prepare_video() before init_worker() in this process")
    started = time.perf_counter()
    try:
        if work.content_hash is None:
            work.content_hash = file_hash(work.found.path)
        sampled = sample_frames(work.found.path, target, limits)
        return PreparedVideo(
            work,
            [transform(frame) for frame in sampled.frames],
            sampled.times,
            sampled.width,
            sampled.height,
            sampled.taken_at,
            sampled.complete,
            seconds=time.perf_counter() - started,
        )
    except ImageReadError as e:
        reason = "file vanished after the scan (no such file)" if str(e) == NO_SUCH_FILE else str(e)
        return PreparedVideo(work, error=reason, seconds=time.perf_counter() - started)
    except FileNotFoundError:
        return PreparedVideo(
            work, error="file vanished after the scan (no such file)", seconds=time.perf_counter() - started
        )
    except OSError as e:
        return PreparedVideo(work, error=f"cannot read: {e.strerror or e}", seconds=time.perf_counter() - started)
    except Exception as e:  # a decoder bug on one hostile file must not stop the run
        return PreparedVideo(work, error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - started)


def prefetch(
    pool: Executor,
    work: Sequence[Work],
    batch_size: int,
    fn: Callable[[Work], Prepared] = prepare,
    first_batch_size: int | None = None,
) -> Iterator[list[Prepared]]:
    """Yield prepared batches in order while the next batch is decoded in the background; the first
    batch has first_batch_size items (default: batch_size)."""
    first = min(first_batch_size or batch_size, batch_size)
    batches = [work[:first]] if work else []
    batches += [work[i : i + batch_size] for i in range(first, len(work), batch_size)]
    pending = [[pool.submit(fn, w) for w in batch] for batch in batches[:2]]
    for i in range(len(batches)):
        current = pending.pop(0)
        if i + 2 < len(batches):
            pending.append([pool.submit(fn, w) for w in batches[i + 2]])
        yield [future.result() for future in current]
