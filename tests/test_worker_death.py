"""Decode workers die with their run: after `kill -9` of an indexing process its worker processes
(children, or the fork server's children) are gone within seconds instead of waiting forever."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc"),
]

_REPO = Path(__file__).resolve().parents[1]
_RUN = """
import sys
from pathlib import Path
from tests.fakes import fake_model
from xmodal.indexer import Indexer
indexer = Indexer(sys.argv[1], model=fake_model(), workers=2, batch_size=2, start_method=sys.argv[3])
indexer.add_paths([Path(sys.argv[2])])
"""


def _parents() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            table[int(entry)] = (int(fields[1]), fields[0])
    return table


def _descendants(pid: int) -> set[int]:
    table = _parents()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _parents()
    return {p for p in pids if p in table and table[p][1] != "Z"}  # a zombie has exited


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_decode_workers_die_with_a_killed_run(tmp_path: Path, start_method: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    big = photos / "p0000.png"
    Image.effect_noise((1600, 1200), 60).convert("RGB").save(big)  # slow to decode: the run lasts
    for i in range(1, 400):
        shutil.copyfile(big, photos / f"p{i:04d}.png")
    run = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(tmp_path / "idx"), str(photos), start_method],
        cwd=_REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2:  # the decode workers (and, under forkserver, the fork server)
            assert run.poll() is None, run.stderr.read().decode() if run.stderr else ""
            assert time.monotonic() < deadline, "no decode workers started"
            time.sleep(0.2)
            workers = _alive(_descendants(run.pid))
        time.sleep(1.0)  # mid-run, workers busy or blocked on their queue
        workers = _alive(_descendants(run.pid))
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
        deadline = time.monotonic() + 10
        while _alive(workers):
            assert time.monotonic() < deadline, f"orphaned workers still alive: {_alive(workers)}"
            time.sleep(0.2)
    finally:
        if run.poll() is None:
            run.kill()
        for pid in _alive(workers):  # never leave them behind, whatever failed
            os.kill(pid, signal.SIGKILL)
