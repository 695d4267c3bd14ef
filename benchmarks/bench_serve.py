"""Serving benchmark: `xmodal serve` under a bounded load of concurrent HTTP clients.

    python3 benchmarks/bench_serve.py --items 100000 --requests 200 --clients 1,8,32 [--json out.json]
    python3 benchmarks/bench_serve.py --items 2000 --requests 10 --clients 1,8 --writer-photos 40   # a quick check

The index: a few real photos indexed by `xmodal index` with the offline default model (so the model,
its exported query encoders and its query bank are the real ones), then `--items` synthetic image
rows with embedding-like vectors (benchmarks/bench_search.py's generator) written straight to SQL,
and the FAISS cache built at the size's index type (`xmodal optimize`). Built once per size in
--workdir and reused.

A thumbnail phase fetches the thumbnails of a page of 60 12-MP photos (4032x3024 JPEGs) over 8
connections, first with an empty thumbnail cache (made on request), then warm.

Each phase runs `--requests` text searches per client (GET /api/search?q=...&limit=20, the same 40
queries in turn) with 1, 8 and 32 clients, each client one request at a time over a
keep-alive connection of its own: requests/s, p50/p95/p99 latency, errors (non-200 answers and
dropped connections). The load generator is a lean h11 client on asyncio, or with `--client httpx`
httpx's AsyncClient; its CPU per request is reported as client_cpu_ms, because on a machine of few
cores it runs beside the server and takes the server's CPU (here httpx's costs 1.3-2.3 ms a request,
the h11 client's 0.5 ms).
The `writer` phase repeats the 32-client load while `xmodal index` (another process) embeds
--writer-photos new real photos into the same index.

The library baseline is measured in the same run, before the server starts: the same queries
through `SearchEngine.search` in-process, from 1 thread and from 8 threads; the report compares
HTTP at 8 clients with the better of the two (goal: at least 80%). It also gives the CPU time per
query in the library and per request in the server (from /proc, Linux): on a machine of few cores
the load generator's own CPU competes with the server, which throughput alone cannot separate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np

QUERIES = [
    "a dog running on the grass",
    "children playing in the snow",
    "a man riding a bicycle",
    "two people on a beach",
    "a black and white dog",
    "a girl in a pink dress",
    "a group of people in a city street",
    "a boat on the water",
    "a skier going down a slope",
    "a football game",
    "a cat sleeping on a sofa",
    "mountains at sunset",
    "a red car parked outside",
    "a child on a swing",
    "a woman climbing a rock",
    "a brown dog with a ball",
    "surfers riding a wave",
    "a crowd at a concert",
    "a man with a hat",
    "a bird flying over the sea",
    "people sitting at a table",
    "a boy jumping into a pool",
    "a horse in a field",
    "a woman with an umbrella",
    "a street at night",
    "two dogs playing",
    "a person on a skateboard",
    "a snowy forest",
    "an old building",
    "a baby smiling",
    "a man fishing from a boat",
    "runners in a race",
    "a dog catching a frisbee",
    "a couple walking in the park",
    "a motorcycle on a road",
    "kids in a playground",
    "a girl reading a book",
    "a biker doing a trick",
    "a family at a picnic",
    "a wedding photo",
]
ROOT = Path(__file__).resolve().parent
THUMBNAIL_PAGE = 60  # thumbnails on one results page of the gallery


def _xmodal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xmodal.cli.app", *args], capture_output=True, text=True, env=env)


def _photos(folder: Path, count: int, seed: int) -> Path:
    """Small real JPEGs (shapes on a background), different in every run so the writer embeds them."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        im = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(4):
            x, y = (int(v) for v in rng.integers(0, 280, 2))
            draw.ellipse((x, y % 200, x + 60, y % 200 + 50), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        im.save(folder / f"p{seed}_{i:05d}.jpg", quality=85)
    return folder


def _camera_photos(folder: Path, count: int) -> Path:
    """12-MP JPEGs (4032x3024, smooth content like a photo's), for the thumbnail phase."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        target = folder / f"camera_{i:03d}.jpg"
        if not target.exists():
            small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(small).resize((4032, 3024), Image.Resampling.BICUBIC).save(target, quality=88)
    return folder


def build_index(workdir: Path, items: int, env: dict[str, str]) -> Path:
    """The benchmark index: `items` synthetic rows, 8 small real photos and 60 12-MP photos (made
    once per size, then reused)."""
    index = workdir / f"index_{items}"
    if (index / "ready").exists():
        return index
    photos = _photos(workdir / "seed_photos", 8, seed=0)
    camera = _camera_photos(workdir / "camera_photos", THUMBNAIL_PAGE)
    result = _xmodal("index", str(photos), str(camera), "--index", str(index), env=env)
    if result.returncode != 0:
        raise SystemExit(f"xmodal index failed: {result.stderr}")
    sys.path.insert(0, str(ROOT))
    from bench_search import add_synthetic_photos  # the search benchmark's embedding-like rows

    from xmodal.indexer.store.index_store import IndexStore

    store = IndexStore.open(index)
    try:
        add_synthetic_photos(store, items)
    finally:
        store.close()
    (index / "ready").write_text("ok")
    return index


def library_baseline(index: Path, requests: int) -> dict[str, float]:
    """Queries per second of SearchEngine.search in-process, one thread and eight threads, and the
    CPU time each query took (cpu_ms_1, cpu_ms_8)."""
    from xmodal.search.engine import SearchEngine

    out = {}
    with SearchEngine.open(index) as engine:
        for q in QUERIES[:5]:
            engine.search(q, k=20)  # warm: encoder, FAISS, query bank
        for threads in (1, 8):
            total = max(requests * threads, 40)
            started, cpu = time.perf_counter(), time.process_time()
            if threads == 1:
                for i in range(total):
                    engine.search(QUERIES[i % len(QUERIES)], k=20)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(lambda i: engine.search(QUERIES[i % len(QUERIES)], k=20), range(total)))
            out[f"threads_{threads}"] = total / (time.perf_counter() - started)
            out[f"cpu_ms_{threads}"] = (time.process_time() - cpu) * 1000 / total
    return out


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; Linux only (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(index: Path, env: dict[str, str], extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "xmodal.cli.app", "serve", "--index", str(index), "--port", "0", *extra],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"http://[^ ]+:(\d+)/", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, f"http://127.0.0.1:{match.group(1)}"


class _Connection:
    """One keep-alive HTTP/1.1 connection driven by h11 (uvicorn's own protocol library): a load
    generator that costs the shared CPU far less per request than a full client such as httpx, so
    the figures measure the server rather than the client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        import h11

        self._h11 = h11
        self._reader, self._writer, self._host = reader, writer, host
        self._conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, url: str) -> _Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def get(self, target: str) -> tuple[int, bytes]:
        h11 = self._h11
        if self._conn.our_state is h11.DONE:
            self._conn.start_next_cycle()
        request = h11.Request(method="GET", target=target, headers=[("Host", self._host)])
        self._writer.write(self._conn.send(request) + self._conn.send(h11.EndOfMessage()))
        status, body = 0, bytearray()
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                self._conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)

    def close(self) -> None:
        self._writer.close()


async def load(url: str, clients: int, requests: int, client: str = "h11") -> dict[str, float]:
    """`clients` concurrent clients, each on a keep-alive connection of its own, sending `requests`
    searches one after another; `client` is the lean h11 generator or "httpx" (an AsyncClient with
    a pool of `clients` connections)."""
    latencies: list[float] = []
    errors = 0
    failures: tuple[type[BaseException], ...] = (OSError, ValueError)
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        pool = httpx.AsyncClient(base_url=url, limits=limits, timeout=120)
        failures += (httpx.HTTPError,)

        async def fetch(number: int, target: str) -> tuple[int, bytes]:
            response = await pool.get(target)
            return response.status_code, response.content

        async def close() -> None:
            await pool.aclose()

    else:
        connections = [await _Connection.open(url) for _ in range(clients)]

        async def fetch(number: int, target: str) -> tuple[int, bytes]:
            return await connections[number].get(target)

        async def close() -> None:
            for connection in connections:
                connection.close()

    await fetch(0, "/api/search?" + urlencode({"q": QUERIES[0], "limit": 20}))  # warm the server

    async def one_client(number: int) -> None:
        nonlocal errors
        for i in range(requests):
            query = QUERIES[(number * 7 + i) % len(QUERIES)]
            started = time.perf_counter()
            try:
                status, body = await fetch(number, "/api/search?" + urlencode({"q": query, "limit": 20}))
                ok = status == 200 and len(json.loads(body)["hits"]) > 0
            except failures:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started, cpu = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(one_client(n) for n in range(clients)))
    finally:
        await close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": errors,
        "client_cpu_ms": round(cpu * 1000 / len(latencies), 2),
    }


async def thumbnail_page(url: str, camera: Path, cache: Path) -> dict[str, float]:
    """A page of 60 thumbnails of 12-MP photos fetched over 8 connections (as a browser does):
    first with an empty thumbnail cache, then warm."""
    import shutil

    import httpx

    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=8), timeout=300) as client:
        body = (
            await client.get("/api/search", params={"q": "a photo", "under": str(camera), "limit": THUMBNAIL_PAGE})
        ).json()
        ids = [h["id"] for h in body["hits"]]
        shutil.rmtree(cache / "thumbnails", ignore_errors=True)
        out: dict[str, float] = {"thumbnails": len(ids)}
        for label in ("cold_page_ms", "warm_page_ms"):
            started = time.perf_counter()
            answers = await asyncio.gather(*(client.get(f"/api/items/{i}/thumbnail") for i in ids))
            out[label] = round((time.perf_counter() - started) * 1000, 1)
            out["errors"] = out.get("errors", 0) + sum(a.status_code != 200 for a in answers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="synthetic image rows in the index")
    parser.add_argument("--requests", type=int, default=200, help="requests per client in each phase")
    parser.add_argument("--clients", default="1,8,32", help="client counts, comma-separated")
    parser.add_argument(
        "--writer-photos",
        type=int,
        default=400,
        help="real photos `xmodal index` adds during the writer phase (0: skip it)",
    )
    parser.add_argument("--server-threads", type=int, help="`xmodal serve --threads N` (default: the server's own)")
    parser.add_argument(
        "--client",
        choices=("h11", "httpx"),
        default="h11",
        help="load generator: a lean h11 client (default) or httpx's AsyncClient, which costs more CPU per request",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/xmodal_bench_serve"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "XMODAL_CACHE": str(args.workdir / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    os.environ.update({k: env[k] for k in ("XMODAL_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")})

    index = build_index(args.workdir, args.items, env)
    baseline = library_baseline(index, args.requests)
    best = max(baseline["threads_1"], baseline["threads_8"])
    print(
        f"library in-process: 1 thread {baseline['threads_1']:.1f} q/s, 8 threads {baseline['threads_8']:.1f} q/s",
        flush=True,
    )

    process, url = start_server(index, env, ["--threads", str(args.server_threads)] if args.server_threads else [])
    phases = []
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not answer /api/health")
            time.sleep(0.2)
        thumbs = asyncio.run(thumbnail_page(url, args.workdir / "camera_photos", args.workdir / "cache"))
        print(json.dumps({"phase": "thumbnail page", **thumbs}), flush=True)
        for n in clients:
            cpu_before = cpu_seconds(process.pid)
            result = asyncio.run(load(url, n, args.requests, args.client))
            cpu_after = cpu_seconds(process.pid)
            if cpu_before is not None and cpu_after is not None:
                # the server's own CPU per request (its warm-up request included)
                result["server_cpu_ms"] = round((cpu_after - cpu_before) * 1000 / (result["requests"] + 1), 2)
            result["phase"] = "read"
            phases.append(result)
            print(json.dumps(result), flush=True)
        if args.writer_photos:
            photos = _photos(args.workdir / f"writer_{int(time.time())}", args.writer_photos, seed=int(time.time()))
            before = httpx.get(url + "/api/info").json()["images"]
            writer = subprocess.Popen(
                [sys.executable, "-m", "xmodal.cli.app", "index", str(photos), "--index", str(index)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            while writer.poll() is None and httpx.get(url + "/api/info").json()["images"] == before:
                time.sleep(0.2)  # the model loads first; the load starts with the first written batch
            result = asyncio.run(load(url, max(clients), args.requests, args.client))
            result["phase"] = "read while indexing"
            result["writer_still_running_at_end"] = writer.poll() is None
            writer.wait()
            result["writer_exit"] = writer.returncode
            after = httpx.get(url + "/api/info").json()["images"]
            result["photos_added"] = after - before
            phases.append(result)
            print(json.dumps(result), flush=True)
    finally:
        process.terminate()
        process.wait(60)

    at8 = next((p for p in phases if p["clients"] == 8 and p["phase"] == "read"), None)
    report = {
        "items": args.items,
        "client": args.client,
        "library_qps": {k: round(v, 1) for k, v in baseline.items() if k.startswith("threads_")},
        "library_cpu_ms_per_query": {k: round(v, 2) for k, v in baseline.items() if k.startswith("cpu_ms_")},
        "phases": phases,
        "thumbnails": thumbs,
    }
    if at8:
        report["http8_vs_best_library"] = round(at8["requests_per_s"] / best, 3)
    print()
    columns = (
        "phase | clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors | server CPU ms/req | client CPU ms/req"
    )
    print(f"| {columns} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        keys = ("phase", "clients", "requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "errors")
        cells = [p.get(k, "") for k in (*keys, "server_cpu_ms", "client_cpu_ms")]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(
        f"\nthumbnail page ({thumbs['thumbnails']:.0f} 12-MP photos, 8 connections): "
        f"cold {thumbs['cold_page_ms']} ms, warm {thumbs['warm_page_ms']} ms"
    )
    print(
        f"library in-process (same queries): 1 thread {baseline['threads_1']:.1f} q/s, "
        f"8 threads {baseline['threads_8']:.1f} q/s; "
        f"CPU per query {baseline['cpu_ms_1']:.2f} / {baseline['cpu_ms_8']:.2f} ms"
    )
    if at8:
        print(f"HTTP at 8 clients / best library: {report['http8_vs_best_library']:.2f} (goal >= 0.80)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
