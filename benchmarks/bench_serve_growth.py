"""The growing-index case of issue 24: `xmodal serve`'s memory while another process indexes.

    python3 benchmarks/bench_serve_growth.py --rows 200000 --new-photos 240 --noop-posts 375   # the issue's case
    python3 benchmarks/bench_serve_growth.py --rows 2000 --new-photos 16 --noop-posts 10      # a quick check

The index (built once per size in --workdir, or given with --index): a few real photos (Flickr8k,
linked from --photos) indexed by `xmodal index` with the offline default model, then --rows
synthetic image rows with embedding-like vectors (benchmarks/bench_search.py's generator) written
straight to SQL, and the FAISS cache built at the size's index type (`xmodal optimize`).

Phases, with the server's RSS sampled every 50 ms (/proc, Linux):
  idle    after start and a few warm-up searches;
  growth  4 client threads search without pause while `xmodal index` (another process) adds
          --new-photos real photos, then --noop-posts POST /api/index of a folder already indexed
          (each a run that changes nothing), one after another;
  held    2 s after the clients stopped.
Printed: idle, peak and held RSS, the server's catch-ups (`reloads` in /api/info) and searches done.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent
# the repository's neighbour ../shared (from a checkout or a worktree of it)
DEFAULT_PHOTOS = next(
    (p / "shared/datasets/flickr8k-1k/images" for p in ROOT.parents if (p / "shared/datasets").is_dir()),
    ROOT.parent.parent / "shared/datasets/flickr8k-1k/images",
)
QUERIES = ["a dog running on the grass", "children playing in the snow", "a man riding a bicycle", "a boat"]


def xmodal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xmodal.cli.app", *args], capture_output=True, text=True)


def link_photos(source: Path, target: Path, names: list[str]) -> Path:
    """Symbolic links to real photos (never copies of the dataset)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = target / name
        if not link.exists():
            link.symlink_to(source / name)
    return target


def build_index(workdir: Path, rows: int, photos: list[Path]) -> Path:
    index = workdir / f"index_{rows}"
    if (index / "ready").exists():
        return index
    seed = link_photos(photos[0].parent, workdir / "seed_photos", [p.name for p in photos])
    result = xmodal("index", str(seed), "--index", str(index))
    if result.returncode != 0:
        raise SystemExit(f"xmodal index failed: {result.stderr}")
    sys.path.insert(0, str(ROOT))
    from bench_search import add_synthetic_photos  # the search benchmark's embedding-like rows

    from xmodal.indexer.store.index_store import IndexStore

    store = IndexStore.open(index)
    try:
        add_synthetic_photos(store, rows)
    finally:
        store.close()
    (index / "ready").write_text("ok")
    return index


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The peak RSS of a process since the last `reset`, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def request(url: str, method: str, target: str, body: dict | None = None) -> tuple[int, dict]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, target, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def search_until(url: str, stop: threading.Event, counts: list[int], errors: list[str]) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    i = 0
    while not stop.is_set():
        try:
            connection.request("GET", "/api/search?" + urlencode({"q": QUERIES[i % len(QUERIES)], "limit": 20}))
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(str(response.status))
            counts.append(1)
        except (OSError, http.client.HTTPException) as e:
            errors.append(type(e).__name__)
            connection.close()
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        i += 1
    connection.close()


def wait_for_job(url: str) -> dict:
    while True:
        status, body = request(url, "GET", "/api/index")
        if body.get("state") != "running":
            return body
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="synthetic rows in the index")
    parser.add_argument("--index", type=Path, help="an existing index to use (it gains the new photos)")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="a folder of real photos (linked)")
    parser.add_argument("--new-photos", type=int, default=240, help="photos `xmodal index` adds meanwhile")
    parser.add_argument("--noop-posts", type=int, default=50, help="POST /api/index runs that change nothing")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "xmodal_bench_growth")
    args = parser.parse_args()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]), flush=True)

    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(photos) < 8 + args.new_photos:
        raise SystemExit(f"{args.photos} holds {len(photos)} photos; {8 + args.new_photos} are needed")
    args.workdir.mkdir(parents=True, exist_ok=True)
    index = args.index or build_index(args.workdir, args.rows, photos[:8])
    new = [p.name for p in photos[8 : 8 + args.new_photos]]
    batch = link_photos(args.photos, args.workdir / f"new_{int(time.time())}", new)

    server = subprocess.Popen(
        [sys.executable, "-m", "xmodal.cli.app", "serve", "--index", str(index), "--port", "0", "--allow-index",
         "--root", str(batch.parent)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stderr is not None
    line = ""
    while "http://" not in line:
        line = server.stderr.readline()
        if not line:
            raise SystemExit("the server did not start")
    threading.Thread(target=server.stderr.read, daemon=True).start()
    url = "http://127.0.0.1:" + re.search(r"http://[^ ]+:(\d+)/", line).group(1)  # type: ignore[union-attr]
    try:
        for q in QUERIES * 2:
            request(url, "GET", "/api/search?" + urlencode({"q": q, "limit": 20}))
        time.sleep(1.0)
        idle = rss_mb(server.pid)
        print(f"idle RSS: {idle:.0f} MB ({request(url, 'GET', '/api/info')[1].get('images')} photos)", flush=True)

        sampler = Sampler(server.pid)
        stop, counts, errors = threading.Event(), [], []
        clients = [threading.Thread(target=search_until, args=(url, stop, counts, errors)) for _ in range(args.clients)]
        for client in clients:
            client.start()
        started = time.perf_counter()
        result = xmodal("index", str(batch), "--index", str(index))
        print(f"xmodal index of {args.new_photos} photos: {time.perf_counter() - started:.1f} s, "
              f"exit {result.returncode} {result.stderr.strip().splitlines()[-1:] if result.returncode else ''}",
              flush=True)  # fmt: skip
        after_index = sampler.peak
        started = time.perf_counter()
        refused = 0
        for _ in range(args.noop_posts):
            status, _ = request(url, "POST", "/api/index", {"paths": [str(batch)]})
            refused += status >= 300
            wait_for_job(url)
        print(f"{args.noop_posts} no-op POST /api/index: {time.perf_counter() - started:.1f} s, {refused} refused",
              flush=True)  # fmt: skip
        stop.set()
        for client in clients:
            client.join()
        sampler.stop()
        time.sleep(2.0)
        held = rss_mb(server.pid)
        info = request(url, "GET", "/api/info")[1]
        print(f"peak RSS while indexing: {after_index:.0f} MB; peak overall: {sampler.peak:.0f} MB; "
              f"held: {held:.0f} MB")  # fmt: skip
        print(f"searches: {len(counts)}, errors: {len(errors)} {sorted(set(errors))[:5]}; "
              f"catch-ups ('reloads'): {info.get('reloads')}; photos now: {info.get('images')}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
