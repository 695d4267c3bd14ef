"""The memory of `xmodal serve` under hostile requests (issue 24): peak and held RSS per case.

    python3 benchmarks/bench_serve_memory.py                       # every case, full size (minutes, GBs before the fix)
    python3 benchmarks/bench_serve_memory.py --case json_list --case batch
    python3 benchmarks/bench_serve_memory.py --scale 0.05 --photos 8   # a quick check that it works

A real `xmodal serve` (a subprocess, loopback, no token) over a small index of --photos photos of
the flickr8k-1k sample indexed with the offline default model, plus, for the thumbnail case, a few
100-MP scans. Each case sends its requests from threads and reports the answers' status codes, the
time taken, and the server's RSS: before the case, its peak during the case (VmHWM after a reset
through /proc/PID/clear_refs, and sampled every 10 ms), and what it still holds 3 s after.

The cases (one function each, registered in CASES; add one with @case):
- upload_png:    --parallel uploads at once of a PNG of 12,000 x 10,000 (at the 120-MP cap; ~0.4 MB)
- embed_images:  /api/embed/images with 32 PNGs of 8,000 x 8,000 in one request (then 3: 192 MP)
- thumbnails:    12 thumbnails of 100-MP scans at once (empty thumbnail cache)
- json_list:     /api/embed/texts with a 5 MB {"texts": [0, 0, ...]} while /api/health is probed 30 times
- batch:         /api/search/batch and /api/embed/texts with 256 queries of 4,096 characters
The growing-index case (a 200,000-photo index while another process indexes, and no-op POST
/api/index runs) needs an index of its own and a writer process: benchmarks/bench_serve_growth.py.
--scale multiplies every picture's pixels and the JSON body's size (0.05: a quick run on a busy machine).
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

# ../shared/datasets/flickr8k-1k beside the repository (e.g. /work/main -> /work/shared/...)
DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "flickr8k-1k"
MB = 1024 * 1024


# --- the server and its memory ----------------------------------------------------------------
@dataclass
class Server:
    """A running `xmodal serve` subprocess: its URL, its pid, and its memory from /proc."""

    process: subprocess.Popen
    url: str
    photos: Path  # where extra photos (the scans) go; indexed before the server starts
    samples: list[int] = field(default_factory=list)
    _sampling: threading.Event = field(default_factory=threading.Event)

    def _status(self, key: str) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        return int(match.group(1)) * 1024 if match else 0

    def rss(self) -> int:
        return self._status("VmRSS")

    @contextmanager
    def measured(self) -> Iterator[dict[str, float]]:
        """RSS before, peak during (VmHWM reset first, and sampled) and held 3 s after, in MB."""
        figures: dict[str, float] = {"rss_before_mb": self.rss() / MB}
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            hwm = True
        except OSError:
            hwm = False
        self.samples = []
        self._sampling.set()
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        try:
            yield figures
        finally:
            figures["seconds"] = round(time.perf_counter() - started, 2)
            self._sampling.clear()
            sampler.join()
            peak = max(self.samples, default=0)
            if hwm:
                peak = max(peak, self._status("VmHWM"))
            figures["rss_peak_mb"] = peak / MB
            time.sleep(3)
            figures["rss_held_mb"] = self.rss() / MB
            for key in ("rss_before_mb", "rss_peak_mb", "rss_held_mb"):
                figures[key] = round(figures[key])

    def _sample(self) -> None:
        while self._sampling.is_set():
            try:
                self.samples.append(self.rss())
            except OSError:
                return
            time.sleep(0.01)


def build_index(workdir: Path, dataset: Path, photos: int, scans: int, scan_mp: float) -> tuple[Path, Path]:
    """--photos photos of the sample and `scans` PNG scans, indexed once per size in workdir."""
    index = workdir / f"index-{photos}-{scans}-{scan_mp:g}"
    folder = workdir / f"photos-{photos}-{scans}-{scan_mp:g}"
    if (index / "done").exists():
        return index, folder
    shutil.rmtree(index, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    images = sorted((dataset / "images").glob("*.jpg"))[:photos] if dataset.exists() else []
    for source in images:
        shutil.copy(source, folder / source.name)
    for i in range(len(images), photos):  # no sample at hand: plain pictures
        Image.new("RGB", (640, 480), (40 * i % 255, 90, 160)).save(folder / f"plain{i}.jpg")
    side = int((scan_mp * 1e6 / 1.3) ** 0.5)  # a page of 1 : 1.3 holding scan_mp megapixels
    for i in range(scans):  # a scanned page: large, flat, compresses to little
        scan = Image.new("RGB", (side, int(side * 1.3)), (235 - 10 * i, 230, 220))
        scan.paste((40, 40, 60), (side // 10, side // 10, side // 2, side // 8))
        scan.save(folder / f"scan{i:02d}.png", optimize=False, compress_level=6)
    _xmodal("index", str(folder), "--index", str(index))
    (index / "done").write_text("")
    return index, folder


def _xmodal(*args: str, cache: Path | None = None) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if cache is not None:
        env["XMODAL_CACHE"] = str(cache)
    subprocess.run([sys.executable, "-m", "xmodal.cli.app", *args], check=True, env=env)


@contextmanager
def serving(index: Path, photos: Path, cache: Path) -> Iterator[Server]:
    shutil.rmtree(cache / "thumbnails", ignore_errors=True)  # thumbnails are made on request
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", XMODAL_CACHE=str(cache))
    process = subprocess.Popen(
        [sys.executable, "-m", "xmodal.cli.app", "serve", "--index", str(index), "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    url = ""
    for line in process.stderr:
        match = re.search(r"at (http://\S+?)/ ", line)
        if match:
            url = match.group(1)
            break
    if not url:
        process.kill()
        raise RuntimeError("xmodal serve did not start")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep its pipe drained
    try:
        # Both towers loaded (the picture tower loads on the first picture query) and the caches read,
        # so what a case holds afterwards is the case's, not a model's.
        httpx.get(f"{url}/api/search", params={"q": "warm up"}, timeout=300)
        small = {"image": ("warm.png", _png(64, 64), "image/png")}
        httpx.post(f"{url}/api/search", files=small, timeout=300)
        yield Server(process, url, photos)
    finally:
        process.terminate()
        process.wait(30)


# --- the cases ----------------------------------------------------------------------------------
Case = Callable[[Server, argparse.Namespace], dict[str, object]]
CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


def _png(width: int, height: int, shade: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 200 - shade // 2, 90)).save(buf, "PNG")
    return buf.getvalue()


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    factor = scale**0.5
    return max(8, int(width * factor)), max(8, int(height * factor))


def _statuses(responses: list[httpx.Response | BaseException]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in responses:
        key = str(r.status_code) if isinstance(r, httpx.Response) else type(r).__name__
        counts[key] = counts.get(key, 0) + 1
    return counts


def _parallel(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response | BaseException]:
    def run(call: Callable[[], httpx.Response]) -> httpx.Response | BaseException:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - a dropped connection is a figure too
            return e

    with ThreadPoolExecutor(max(1, len(calls))) as pool:
        return list(pool.map(run, calls))


@case
def upload_png(server: Server, args: argparse.Namespace) -> dict[str, object]:
    """--parallel uploads at once of one PNG at the pixel cap (12,000 x 10,000)."""
    body = _png(*_scaled(12_000, 10_000, args.scale))
    calls = [
        lambda: httpx.post(f"{server.url}/api/search", files={"image": ("big.png", body, "image/png")}, timeout=600)
        for _ in range(args.parallel)
    ]
    with server.measured() as figures:
        figures["answers"] = _statuses(_parallel(calls))  # type: ignore[assignment]
    figures["body_kb"] = round(len(body) / 1024)
    return figures


@case
def embed_images(server: Server, args: argparse.Namespace) -> dict[str, object]:
    """/api/embed/images with 32 PNGs of 8,000 x 8,000 in one request; then with 3 of them (192 MP,
    the most the default pixel budget of a request admits)."""
    body = _png(*_scaled(8_000, 8_000, args.scale))
    out: dict[str, object] = {"body_kb_each": round(len(body) / 1024)}
    for count in (32, 3):
        files = [("images", (f"{i}.png", body, "image/png")) for i in range(count)]
        with server.measured() as figures:
            figures["answers"] = _statuses(  # type: ignore[assignment]
                _parallel([lambda f=files: httpx.post(f"{server.url}/api/embed/images", files=f, timeout=600)])
            )
        out[f"x{count}"] = figures
    return out


@case
def thumbnails(server: Server, args: argparse.Namespace) -> dict[str, object]:
    """The thumbnails of the 100-MP scans, all at once, with an empty thumbnail cache."""
    ids = []
    for hit in httpx.get(f"{server.url}/api/search", params={"q": "a scanned page", "limit": 200}).json()["hits"]:
        if hit["name"].startswith("scan"):
            ids.append(hit["id"])
    calls = [lambda i=i: httpx.get(f"{server.url}/api/items/{i}/thumbnail", timeout=600) for i in ids]
    with server.measured() as figures:
        figures["answers"] = _statuses(_parallel(calls))  # type: ignore[assignment]
    return figures


@case
def json_list(server: Server, args: argparse.Namespace) -> dict[str, object]:
    """A 5 MB {"texts": [0, 0, ...]} to /api/embed/texts while /api/health is probed 30 times (1 s timeout)."""
    count = max(1, int(2_500_000 * args.scale))
    body = b'{"texts": [' + b",".join([b"0"] * count) + b"]}"
    probes: list[httpx.Response | BaseException] = []

    def probe() -> None:
        for _ in range(30):
            try:
                probes.append(httpx.get(f"{server.url}/api/health", timeout=1))
            except Exception as e:  # noqa: BLE001
                probes.append(e)
            time.sleep(0.1)

    with server.measured() as figures:
        prober = threading.Thread(target=probe)
        prober.start()
        answer = _parallel(
            [
                lambda: httpx.post(
                    f"{server.url}/api/embed/texts",
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=600,
                )
            ]
        )[0]
        prober.join()
        figures["answers"] = _statuses([answer])  # type: ignore[assignment]
        figures["answer_bytes"] = len(answer.content) if isinstance(answer, httpx.Response) else 0
        figures["health_failed"] = sum(1 for p in probes if not isinstance(p, httpx.Response))
    figures["body_kb"] = round(len(body) / 1024)
    return figures


@case
def batch(server: Server, args: argparse.Namespace) -> dict[str, object]:
    """256 queries of 4,096 characters, to /api/search/batch and to /api/embed/texts; then the largest
    batch the limits admit (64 of them: 256 K characters) to each."""
    words = "a dog runs on the beach near the sea at sunset "
    queries = [(f"{i} " + words * 100)[:4096] for i in range(256)]
    out: dict[str, object] = {}
    for count in (256, 64):
        for route, key in (("/api/search/batch", "queries"), ("/api/embed/texts", "texts")):
            url, body = f"{server.url}{route}", {key: queries[:count]}
            with server.measured() as figures:
                figures["answers"] = _statuses(  # type: ignore[assignment]
                    _parallel([lambda u=url, b=body: httpx.post(u, json=b, timeout=600)])
                )
            out[f"{route} x{count}"] = figures
    return out


# --- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--case", action="append", choices=sorted(CASES), help="a case to run (repeatable; default all)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies pixels and the JSON size (0.05: quick)")
    parser.add_argument("--parallel", type=int, default=8, help="uploads at once in upload_png")
    parser.add_argument("--photos", type=int, default=40, help="photos of the sample in the index")
    parser.add_argument("--scans", type=int, default=12, help="100-MP scans in the index (thumbnails case)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xmodal-bench-serve-memory"))
    parser.add_argument("--dataset", type=Path, default=DATASET, help="the flickr8k-1k sample (its images/)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        sys.exit("this benchmark reads /proc (Linux)")
    chosen = args.case or sorted(CASES)
    scans = args.scans if "thumbnails" in chosen else 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    index, photos = build_index(args.workdir, args.dataset, args.photos, scans, 100 * args.scale)
    results: dict[str, object] = {}
    with serving(index, photos, args.workdir / "cache") as server:
        results["idle_rss_mb"] = round(server.rss() / MB)
        print(f"idle: {results['idle_rss_mb']} MB", flush=True)
        for name in chosen:
            results[name] = CASES[name](server, args)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
