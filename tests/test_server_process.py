"""`xmodal serve` as a real process on a free port (offline default model), talked to over HTTP
while `xmodal index`, another process, adds photos: every search answers, and the new photos
appear without a restart. Also: refusing a public address without a token (exit 2, one line)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.slow


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "XMODAL_CACHE": str(tmp / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **extra,
    }


def _xmodal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmodal.cli.app", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _drawing(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (160, 120), (250, 250, 245))
    ImageDraw.Draw(im).ellipse((40, 20, 120, 100), fill=colour)
    im.save(path)


def _start_server(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "xmodal.cli.app", "serve", *args], stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stderr is not None
    lines = []
    match = None
    while match is None and len(lines) < 5:  # "xmodal: serving DIR at http://127.0.0.1:PORT/ ..."
        lines.append(process.stderr.readline())
        match = re.search(r"http://[^ ]+:(\d+)/", lines[-1])
        if not lines[-1]:
            break
    if not match:
        process.kill()
        raise AssertionError(f"no address in {lines!r}: {process.stderr.read()}")
    url = f"http://127.0.0.1:{match.group(1)}"
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError("the server did not come up")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("served")
    env = _env(root)
    photos = root / "photos"
    for i, colour in enumerate([(220, 30, 30), (30, 160, 40), (30, 40, 220)]):
        _drawing(photos / f"first{i}.png", colour)
    result = _xmodal("index", str(photos), "--index", str(root / "index"), env=env)
    assert result.returncode == 0, result.stderr
    yield photos, root / "index", env


def test_serve_while_another_process_indexes(indexed: tuple[Path, Path, dict[str, str]]) -> None:
    photos, index, env = indexed
    process, url = _start_server(["--index", str(index), "--port", "0"], env)
    try:
        first = httpx.get(url + "/api/search", params={"q": "a red circle", "limit": 10}, timeout=60).json()
        assert len(first["hits"]) == 3
        for i in range(12):
            _drawing(photos / "later" / f"later{i}.png", ((i * 60) % 256, 120, (i * 90) % 256))
        writer = subprocess.Popen(
            [sys.executable, "-m", "xmodal.cli.app", "index", str(photos), "--index", str(index)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        statuses: list[int] = []
        with httpx.Client(base_url=url, timeout=60) as client:
            while writer.poll() is None:
                statuses.append(client.get("/api/search", params={"q": "a circle", "limit": 20}).status_code)
                time.sleep(0.05)
            _, err = writer.communicate()
            assert writer.returncode == 0, err
            deadline = time.monotonic() + 30
            names: list[str] = []
            while time.monotonic() < deadline:
                body = client.get("/api/search", params={"q": "a circle", "limit": 20}).json()
                names = [h["name"] for h in body["hits"]]
                if len(names) == 15:
                    break
                time.sleep(0.3)
        assert statuses and set(statuses) == {200}, statuses
        assert len(names) == 15 and sum(n.startswith("later") for n in names) == 12, names
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


def test_public_address_needs_a_token(indexed: tuple[Path, Path, dict[str, str]]) -> None:
    _, index, env = indexed
    refused = _xmodal(
        "serve",
        "--index",
        str(index),
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        env={k: v for k, v in env.items() if k != "XMODAL_TOKEN"},
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xmodal: error: refusing to listen on 0.0.0.0 without a token")
    process, url = _start_server(
        ["--index", str(index), "--host", "0.0.0.0", "--port", "0"], {**env, "XMODAL_TOKEN": "s3cret-token"}
    )
    try:
        assert httpx.get(url + "/api/health").status_code == 200
        assert httpx.get(url + "/api/info").status_code == 401
        assert httpx.get(url + "/api/info", headers={"Authorization": "Bearer s3cret-token"}).json()["auth"] is True
    finally:
        process.terminate()
        process.wait(30)


def test_no_index_is_one_line_exit_4(tmp_path: Path) -> None:
    result = _xmodal("serve", "--index", str(tmp_path / "nothing"), "--port", "0", env=_env(tmp_path))
    assert result.returncode == 4 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_100_kb_query_string_gets_a_json_4xx_and_the_server_keeps_serving(
    indexed: tuple[Path, Path, dict[str, str]],
) -> None:
    import socket

    _, index, env = indexed
    process, url = _start_server(["--index", str(index), "--port", "0"], env)
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"GET /api/search?q=" + b"x" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 422"), answer[:200]
        assert b"at most 4096 characters" in answer
        assert httpx.get(url + "/api/search", params={"q": "a circle"}, timeout=60).status_code == 200
    finally:
        process.terminate()
        process.wait(30)


def test_serve_watch_finds_a_dropped_photo_within_seconds(indexed: tuple[Path, Path, dict[str, str]]) -> None:
    photos, index, env = indexed
    process, url = _start_server(["--index", str(index), "--port", "0", "--watch"], env)  # loads the model first
    try:
        time.sleep(1.0)  # the watcher's first pass over the folders
        _drawing(photos / "dropped" / "watched.png", (240, 200, 10))
        started = time.monotonic()
        found = False
        while time.monotonic() - started < 60 and not found:
            hits = httpx.get(url + "/api/search", params={"q": "a yellow circle", "limit": 50}, timeout=60).json()[
                "hits"
            ]
            found = any(h["name"] == "watched.png" for h in hits)
            time.sleep(0.2)
        assert found, "the dropped photo was not found within 60 s"  # about 2 s on a quiet machine
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.slow
def test_serve_watch_and_http_runs_take_turns(indexed: tuple[Path, Path, dict[str, str]]) -> None:
    """With --watch --allow-index, an HTTP run asked for while another writer holds the index waits
    for it (it used to fail on the lock), and the watcher's runs never move the HTTP run's progress
    (they used to share one Indexer and its progress callback)."""
    from xmodal.indexer.store.index_store import IndexStore

    photos, index, env = indexed
    process, url = _start_server(["--index", str(index), "--port", "0", "--watch", "--allow-index"], env)
    try:
        time.sleep(1.0)  # the watcher's first pass over the folders
        writer = IndexStore.open(index)
        try:
            with writer.write_lock():  # another writer (an `xmodal index`) is running
                _drawing(photos / "turns" / "a.png", (200, 30, 200))
                _drawing(photos / "turns" / "b.png", (30, 200, 200))
                started = httpx.post(url + "/api/index", json={"paths": [str(photos / "turns")]}, timeout=60)
                assert started.status_code == 202
                time.sleep(2.0)
                assert httpx.get(url + "/api/index", timeout=60).json()["state"] == "queued"
        finally:
            writer.close()
        deadline = time.monotonic() + 120
        while (status := httpx.get(url + "/api/index", timeout=60).json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["state"] == "done", status
        _drawing(photos / "later" / "c.png", (240, 200, 10))  # the watcher's own run
        deadline = time.monotonic() + 60
        while not any(
            h["name"] == "c.png"
            for h in httpx.get(url + "/api/search", params={"q": "a yellow circle", "limit": 50}, timeout=60).json()[
                "hits"
            ]
        ):
            assert time.monotonic() < deadline, "the watcher did not index c.png"
            time.sleep(0.2)
        assert httpx.get(url + "/api/index", timeout=60).json() == status
    finally:
        process.terminate()
        process.wait(30)


def test_xmodal_watch_command(indexed: tuple[Path, Path, dict[str, str]]) -> None:
    """`xmodal watch` without the server: one JSON line per run, Ctrl-C ends it with status 0."""
    import json
    import signal

    photos, index, env = indexed
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xmodal.cli.app",
            "watch",
            str(photos),
            "--index",
            str(index),
            "--json",
            "--debounce",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # Ctrl-C as at a terminal: a suite started in the background (`cmd &`) has SIGINT ignored,
        # and children inherit that, so the SIGINT below would never arrive.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None and process.stderr is not None

        def next_run() -> dict:
            line = process.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"xmodal watch ended: {process.stderr.read()}")  # type: ignore[union-attr]
            return json.loads(line)

        catch_up = next_run()  # the model is loaded, the folder caught up
        assert catch_up["folders"] == [str(photos)] and catch_up["failed"] == 0
        _drawing(photos / "watched-cli" / "new.png", (10, 200, 240))
        run = next_run()
        assert run["new"] == 1 and run["folders"][0].startswith(str(photos))
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
