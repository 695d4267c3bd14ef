"""Indexing on a real Ray cluster gives what one process gives, through worker and driver deaths.

* a local cluster in this process (ray.init, 2 CPUs): same rows, vectors within 1e-5, same
  failures and the same top-10 as the local pipeline; unchanged files never reach the cluster and
  moves keep their vectors; the same into PostgreSQL (the store machines share); the model actor
  SIGKILLed mid-run is restarted by Ray, same result;
* a real two-node cluster (`ray start --head` + a second raylet joining it, on loopback addresses):
  the driver runs in a subprocess, is SIGKILLed mid-run and the same command resumes to the same
  result.

Select them with `-m ray`; with CI=true a missing Ray is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CI") == "true":
    import ray  # noqa: F401 - CI must have the ray extra: an ImportError here fails the run
else:
    pytest.importorskip("ray")

from tests.conftest import make_image  # noqa: E402
from tests.fakes import fake_model  # noqa: E402
from tests.ray_driver import slow_fake_model  # noqa: E402
from xmodal.indexer import Indexer  # noqa: E402
from xmodal.indexer.distributed import RayOptions  # noqa: E402
from xmodal.indexer.store.index_store import IndexStore  # noqa: E402
from xmodal.indexer.store.schema import FailureRow, ImageRow, blob_to_vector  # noqa: E402
from xmodal.search import SearchEngine  # noqa: E402
from xmodal.search.stats import index_info

pytestmark = [pytest.mark.ray, pytest.mark.slow]

N_IMAGES = 24
QUERIES = ["red", "green", "blue", "yellow", "red blue", "a dark photo"]
REPO = Path(__file__).resolve().parents[1]
RAY_CLI = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"
# Ray on loopback only, no token file in the home folder, no usage report: for the test clusters.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _make_photos(root: Path, n: int = N_IMAGES) -> Path:
    rng = random.Random(7)
    for i in range(n):
        ext = ("jpg", "png", "webp")[i % 3]
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        make_image(
            root / f"d{i % 3}" / f"img{i:03d}.{ext}",
            colour,
            size=(40 + i, 32),
            **({"lossless": True} if ext == "webp" else {}),
        )
    (root / "d1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "d2" / "empty.png").write_bytes(b"")
    return root


def _snapshot(index_dir: Path) -> dict:
    store = IndexStore.open(index_dir)
    try:
        with store.metadata.session() as s:
            rows = {
                r.path: (
                    blob_to_vector(r.vector).copy(),
                    (r.size, r.mtime_ns, r.content_hash, r.width, r.height, r.taken_at),
                )
                for r in s.query(ImageRow)
            }
            failures = {f.path: f.reason for f in s.query(FailureRow)}
    finally:
        store.close()
    engine = SearchEngine.open(index_dir, model=fake_model())
    try:
        top = {q: [h.path for h in engine.search_text(q, k=10, rerank=False)] for q in QUERIES}
    finally:
        engine.close()
    return {"rows": rows, "failures": failures, "top": top}


def _assert_same(got: dict, want: dict) -> None:
    assert set(got["rows"]) == set(want["rows"])
    for path, (vector, facts) in want["rows"].items():
        assert got["rows"][path][1] == facts, path
        np.testing.assert_allclose(got["rows"][path][0], vector, atol=1e-5, err_msg=path)
    assert got["failures"] == want["failures"]
    assert got["top"] == want["top"]


def _short_temp_dir() -> str:
    # Ray's unix sockets live under its temp dir: a pytest tmp path can exceed the 107-byte limit
    return tempfile.mkdtemp(prefix="xr", dir="/tmp")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_photos(tmp_path_factory.mktemp("ray") / "photos")


@pytest.fixture(scope="module")
def local_result(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> dict:
    index_dir = tmp_path_factory.mktemp("local") / "idx"
    Indexer(index_dir, model=fake_model(), batch_size=4).add_paths([photos])
    return _snapshot(index_dir)


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A 2-CPU Ray cluster in this process; the Indexer finds it initialised and uses it."""
    import ray

    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    temp = _short_temp_dir()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_ray_run_matches_the_local_run_and_stays_incremental(
    tmp_path: Path, photos: Path, local_result: dict, ray_local
) -> None:  # noqa: ANN001
    index_dir = tmp_path / "idx"
    summary = Indexer(index_dir, model=fake_model(), batch_size=4, ray=RayOptions(decode_batch=4)).add_paths([photos])
    assert (summary.new, summary.failed) == (N_IMAGES, 2)
    assert summary.timings["cluster_cpus"] == 2
    _assert_same(_snapshot(index_dir), local_result)
    assert index_info(index_dir)["signals"]["facts"]["photos"] == N_IMAGES  # type: ignore[index]  # facts too

    # unchanged files never reach the cluster; a move keeps its vector
    moved_from = photos / "d0" / "img000.jpg"
    moved_to = photos / "d0" / "renamed.jpg"
    before = _snapshot(index_dir)["rows"][str(moved_from)][0]
    os.rename(moved_from, moved_to)
    try:
        sent: list[int] = []
        again = Indexer(
            index_dir,
            model=fake_model(),
            batch_size=4,
            ray=RayOptions(),
            on_progress=lambda p: sent.append(p.total) if p.stage == "index" else None,
        ).add_paths([photos])
        assert (again.embedded, again.moved, again.unchanged) == (0, 1, N_IMAGES - 1)
        assert set(sent) == {2}  # only the two failed files are tried again, as in a local run
        assert np.array_equal(_snapshot(index_dir)["rows"][str(moved_to)][0], before)
    finally:
        os.rename(moved_to, moved_from)


def test_ray_run_into_postgresql_matches_the_local_run(
    tmp_path: Path, photos: Path, local_result: dict, ray_local, pg_url: str
) -> None:  # noqa: ANN001
    """The shared store of a cluster: the driver writes to PostgreSQL, with the same result."""
    index_dir = tmp_path / "idx"
    summary = Indexer(
        index_dir, model=fake_model(), db_url=pg_url, batch_size=4, ray=RayOptions(decode_batch=4)
    ).add_paths([photos])
    assert (summary.new, summary.failed) == (N_IMAGES, 2)
    _assert_same(_snapshot(index_dir), local_result)  # the folder remembers its database URL


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _our_ray_worker(title: str) -> int | None:
    """A process of this test's own Ray cluster (a descendant of this process) by its title."""
    for pid in _descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title in cmdline:
            return pid
    return None


def test_a_killed_model_actor_is_restarted_and_the_result_is_the_same(
    tmp_path: Path, photos: Path, local_result: dict, ray_local
) -> None:  # noqa: ANN001
    killed: list[int] = []

    def kill_once(progress) -> None:  # noqa: ANN001
        if progress.done > 0 and not killed:
            pid = _our_ray_worker("MapWorker(MapBatches(_Embedder))")
            assert pid is not None, "the model actor's process was not found"
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    index_dir = tmp_path / "idx"
    indexer = Indexer(
        index_dir, model=slow_fake_model(0.3), batch_size=4, on_progress=kill_once, ray=RayOptions(decode_batch=4)
    )
    summary = indexer.add_paths([photos])
    assert killed
    assert (summary.new, summary.failed) == (N_IMAGES, 2)
    _assert_same(_snapshot(index_dir), local_result)


# --- a real two-node cluster ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _row_count(index_dir: Path) -> int:
    if not (index_dir / "xmodal.json").exists():
        return 0
    store = IndexStore.open(index_dir)
    try:
        return store.metadata.count(ImageRow)
    finally:
        store.close()


@pytest.fixture
def two_nodes(tmp_path: Path):  # noqa: ANN201
    """`ray start --head` on 127.0.0.2 plus a second raylet on 127.0.0.3, one CPU each.

    The model actor takes one node's CPU, so decoding runs on the other node and every batch
    crosses nodes. `--block` keeps each `ray start` in the foreground; SIGTERM to it stops what it
    started (never `ray stop`, which would stop every Ray on the machine).
    """
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(REPO),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }  # a test cluster has nothing to drain
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    ports = [_free_port() for _ in range(4)]
    address = f"127.0.0.2:{ports[0]}"
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    temp = _short_temp_dir()
    head = subprocess.Popen(
        [
            RAY_CLI,
            "start",
            "--head",
            f"--port={ports[0]}",
            "--node-ip-address=127.0.0.2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            *common,
        ],
        env=env,
        cwd=REPO,
        stdout=open(logs / "head.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    procs = [head]
    try:
        _wait_for_nodes(address, 1, env, procs)
        worker = subprocess.Popen(
            [
                RAY_CLI,
                "start",
                f"--address={address}",
                "--node-ip-address=127.0.0.3",
                f"--node-manager-port={ports[2]}",
                f"--object-manager-port={ports[3]}",
                *common,
            ],
            env=env,
            cwd=REPO,
            stdout=open(logs / "worker.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(worker)
        _wait_for_nodes(address, 2, env, procs)
        yield address, env
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(address: str, count: int, env: dict, procs: list[subprocess.Popen], timeout: float = 120.0) -> None:
    probe = f"import ray; ray.init(address='{address}'); print(sum(n['Alive'] for n in ray.nodes()))"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"`ray start` exited early: {dead}"
        try:
            out = subprocess.run(
                [sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=30
            )
        except subprocess.TimeoutExpired:
            continue
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1.0)
    raise AssertionError(f"the Ray cluster at {address} did not reach {count} node(s)")


def _driver(index_dir: Path, photos: Path, address: str, env: dict, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ray_driver", str(index_dir), str(photos), address, str(delay)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_driver_killed_on_a_two_node_cluster_resumes_to_the_same_result(
    tmp_path: Path, photos: Path, local_result: dict, two_nodes
) -> None:  # noqa: ANN001
    address, env = two_nodes
    index_dir = tmp_path / "idx"
    driver = _driver(index_dir, photos, address, env, delay=0.4)
    deadline = time.monotonic() + 120
    while _row_count(index_dir) == 0 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)  # its own session: the driver and anything it started
    driver.wait(30)
    written = _row_count(index_dir)
    assert 0 < written < N_IMAGES, f"the kill did not land mid-run ({written} rows)"

    resumed = _driver(index_dir, photos, address, env, delay=0.0)
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["nodes"] == ["127.0.0.2", "127.0.0.3"]
    assert report["summary"]["unchanged"] == written  # the written batches are kept, not redone
    assert report["summary"]["new"] == N_IMAGES - written
    _assert_same(_snapshot(index_dir), local_result)
