"""A forked worker never runs the destructors of what it inherited: an onnxruntime session the
parent left in a reference cycle (garbage not yet collected) hung a decode worker in
pthread_cond_destroy when the child's garbage collector reached it (its thread pool's threads do
not exist in the child). Workers freeze what they inherit as their first step, and are forked with
collection off, since another library's at-fork hook can start a collection in the child before
that step (filelock's did: a worker of an index run hung in the full suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
# A parent with garbage its collector has not reached: onnxruntime sessions (with their thread
# pools) in reference cycles.
_GARBAGE = """
import gc, multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np
import onnxruntime as ort
import xmodal.data

gc.disable()  # the parent has not collected its garbage yet when it forks
for _ in range(3):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(Path(xmodal.data.__file__).parent / "xmodal-lite" / "image.onnx"), options,
        providers=["CPUExecutionProvider"],
    )
    feed = session.get_inputs()[0]
    session.run(None, {feed.name: np.zeros([d if isinstance(d, int) else 1 for d in feed.shape], np.float32)})
    cycle = [session]
    cycle.append(cycle)
    del cycle, session
"""


def _run(script: str, mode: str) -> str:
    """What the script printed, run in a fresh interpreter (its fork hooks stay out of pytest's)."""
    done = subprocess.run([sys.executable, "-c", script, mode], cwd=_REPO, capture_output=True, text=True, timeout=120)
    return done.stdout.strip()


_SCRIPT = (
    _GARBAGE
    + """
from xmodal.indexer.decode_pool import _die_with_run

run_pid = os.getpid()


def worker(first_step: bool) -> None:
    if first_step:
        _die_with_run(run_pid)
    gc.collect()


child = multiprocessing.get_context("fork").Process(target=worker, args=(sys.argv[1] == "worker",))
child.start()
child.join(10)
print("hung" if child.is_alive() else f"exit {child.exitcode}")
if child.is_alive():
    child.kill()
"""
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method (Linux)")
def test_a_forked_worker_never_collects_an_inherited_onnxruntime_session() -> None:
    assert _run(_SCRIPT, "worker") == "exit 0"
    # the hazard is real: a forked child that collects the inherited session hangs
    assert _run(_SCRIPT, "bare") == "hung"


_HOOK_SCRIPT = (
    _GARBAGE
    + """
from xmodal.indexer.decode_pool import decode_pool

gc.set_threshold(0)  # the parent collects no more before it forks ...
gc.enable()  # ... but collection is on, as in any process


def allocating_hook() -> None:
    # another library's at-fork hook that allocates: a collection may start, when collection is on
    if gc.isenabled():
        gc.collect()


os.register_at_fork(after_in_child=allocating_hook)
if sys.argv[1] == "pool":
    pool = decode_pool(1, lambda image: image, 8)
else:
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
future = pool.submit(os.getpid)
try:
    future.result(timeout=15)
    print("done", flush=True)
except Exception:
    print("hung", flush=True)
    for process in list(pool._processes.values()):
        process.kill()
os._exit(0)
"""
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method (Linux)")
def test_an_at_fork_hook_never_starts_a_collection_in_a_worker() -> None:
    assert _run(_HOOK_SCRIPT, "pool") == "done"
    # the hazard is real: the same hook in a plain forked pool collects the session, and hangs
    assert _run(_HOOK_SCRIPT, "bare") == "hung"


def test_collection_is_off_while_any_thread_forks_and_restored_after() -> None:
    import gc
    import threading

    from xmodal.indexer.decode_pool import forked_safely

    assert gc.isenabled()
    inside, leave = threading.Event(), threading.Event()

    def other_thread_forking() -> None:
        with forked_safely("fork"):
            inside.set()
            leave.wait(10)

    other = threading.Thread(target=other_thread_forking)
    other.start()
    assert inside.wait(10)
    with forked_safely("fork"):
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread is still forking
    leave.set()
    other.join(10)
    assert gc.isenabled()
    with forked_safely("spawn"):  # no fork in this process: nothing to guard
        assert gc.isenabled()
    gc.disable()
    try:
        with forked_safely("fork"):
            pass
        assert not gc.isenabled()  # a process that had collection off keeps it off
    finally:
        gc.enable()
