"""The HTTP API in-process (FastAPI's TestClient over httpx): every route, its errors, and the
security points of `xmodal serve` (fake encoder, tiny generated photos)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import make_image
from tests.fakes import COLOURS, FAKE_DIM, fake_model
from tests.serving import XSS_NAME, Library, build_library, make_app
from xmodal.indexer.indexing import Indexer
from xmodal.indexer.limits import Limits
from xmodal.indexer.store.index_store import IndexStore
from xmodal.indexer.text_indexing import TextIndexer

BASE = "http://127.0.0.1"  # the loopback Host header the DNS-rebinding guard admits


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    lib = build_library(tmp_path_factory.mktemp("server"))
    corpus = lib.photos.parent / "captions.txt"
    corpus.write_text("a red thing\na green thing\na blue thing\n")
    TextIndexer(lib.index, model=fake_model()).add_files([corpus])
    return lib


@pytest.fixture(scope="module")
def client(library: Library):  # noqa: ANN201
    with TestClient(make_app(library), base_url=BASE) as c:
        yield c


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _names(body: dict) -> list[str]:
    return [h["name"] for h in body["hits"]]


# --- searching ------------------------------------------------------------------------------
def test_health_and_text_search(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}
    response = client.get("/api/search", params={"q": "red", "limit": 3})
    assert response.status_code == 200
    body = response.json()
    assert _names(body)[0] == "red.jpg"
    hit = body["hits"][0]
    assert {"id", "kind", "score", "path", "name", "thumbnail", "url"} <= set(hit)
    assert (
        hit["kind"] == "image"
        and hit["path"].endswith("/red.jpg")
        and hit["thumbnail"] == f"/api/items/{hit['id']}/thumbnail"
    )
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_a_query_not_in_english_says_how_it_was_read(client: TestClient) -> None:
    body = client.get("/api/search", params={"q": "红色", "limit": 3}).json()
    assert body["reading"] == 'reading "红色" as "red"' and _names(body)[0] == "red.jpg"
    body = client.get("/api/search", params={"q": '"红色" - "蓝色"', "limit": 3}).json()
    assert body["reading"] == 'reading "红色" as "red", "蓝色" as "blue"'
    assert client.get("/api/search", params={"q": "red"}).json()["reading"] is None
    note = client.get("/api/search", params={"q": "un coche rojo en la calle"}).json()["reading"]
    assert note.startswith("note: this looks like Spanish, which is not understood yet")


def test_the_reading_is_part_of_what_the_query_was_read_as(client: TestClient) -> None:
    """One explanation: `understood` carries each Chinese term's English, the words not understood and
    a language note, for planned queries and for those searched as they are (`reading` is deprecated)."""
    understood = client.get("/api/search", params={"q": "红色", "limit": 3}).json()["understood"]
    assert understood["read_as"] == [{"text": "红色", "english": "red"}] and understood["reading"] == "red"
    combined = client.get("/api/search", params={"q": '"红色" - "蓝色"', "limit": 3}).json()["understood"]
    assert [r["english"] for r in combined["read_as"]] == ["red", "blue"]
    literal = client.get("/api/search", params={"q": "𠀋红色", "literal": "true", "limit": 3}).json()["understood"]
    assert literal["literal"] and literal["read_as"] == [{"text": "𠀋红色", "english": "red"}]
    assert literal["not_understood"] == ["𠀋"]
    texts = client.get("/api/search", params={"q": "红色", "target": "text"}).json()["understood"]
    assert texts["read_as"] == [{"text": "红色", "english": "red"}]
    note = client.get("/api/search", params={"q": "un coche rojo en la calle"}).json()["understood"]
    assert note["note"].startswith("this looks like Spanish") and note["not_understood"] == []
    english = client.get("/api/search", params={"q": "red"}).json()["understood"]
    assert english["read_as"] == [] and english["note"] is None


def test_paging_with_cursor_and_offset(client: TestClient) -> None:
    everything = [h["id"] for h in client.get("/api/search", params={"q": "blue", "limit": 50}).json()["hits"]]
    first = client.get("/api/search", params={"q": "blue", "limit": 2}).json()
    assert [h["id"] for h in first["hits"]] == everything[:2] and first["next_cursor"]
    second = client.get("/api/search", params={"q": "blue", "limit": 2, "cursor": first["next_cursor"]}).json()
    assert [h["id"] for h in second["hits"]] == everything[2:4] and second["offset"] == 2
    by_offset = client.get("/api/search", params={"q": "blue", "limit": 2, "offset": 2}).json()
    assert by_offset["hits"] == second["hits"]
    last = client.get("/api/search", params={"q": "blue", "limit": 50, "offset": len(everything) - 1}).json()
    assert len(last["hits"]) == 1 and last["next_cursor"] is None


def test_filters_and_options(client: TestClient, library: Library) -> None:
    def names(**params: object) -> list[str]:
        response = client.get("/api/search", params={"q": "red", "limit": 50, **params})
        assert response.status_code == 200, response.text
        return _names(response.json())

    assert set(names(ext="png")) == {"green.png", "blue.png"}
    assert set(names(under=str(library.photos / "sub"))) == {"green.png", "blue.png"}
    assert set(names(min_size="100x70")) == {"red.jpg", "blue.png"}
    assert names(before="2020-06-01") == ["rotated.jpg"]  # EXIF date; the others have today's mtime
    assert "rotated.jpg" not in names(after="2021-01-01")
    assert len(names(min_score="auto")) >= 1
    assert all(
        s >= 0.5
        for s in [h["score"] for h in client.get("/api/search", params={"q": "red", "min_score": 0.5}).json()["hits"]]
    )
    assert names(rerank="false")[0] == "red.jpg"
    assert names(diverse=0.5, collapse=0.99)[0] == "red.jpg"


def test_search_texts_target(client: TestClient) -> None:
    body = client.get("/api/search", params={"q": "green", "target": "text", "limit": 2}).json()
    assert body["target"] == "text" and body["hits"][0]["text"] == "a green thing"
    assert body["hits"][0]["kind"] == "text" and body["hits"][0]["thumbnail"] is None


def test_search_by_upload_and_combined(client: TestClient) -> None:
    response = client.post(
        "/api/search?limit=2", files={"image": ("query.bin", _png(COLOURS["blue"]), "application/octet-stream")}
    )
    assert response.status_code == 200, response.text
    assert _names(response.json())[0] == "blue.png"
    combined = client.post(
        "/api/search?limit=3", files={"image": ("q.png", _png(COLOURS["blue"]), "image/png")}, data={"q": "blue"}
    )
    assert _names(combined.json())[0] == "blue.png"


def test_search_by_item_id_and_more_like_this(client: TestClient, library: Library) -> None:
    ids = library.ids()
    red = ids["red.jpg"]
    similar = client.get(f"/api/items/{red}/similar", params={"limit": 10}).json()
    assert red not in [h["id"] for h in similar["hits"]] and similar["hits"]
    assert (
        client.get("/api/search", params={"like": red}).json()["hits"]
        == client.get(f"/api/items/{red}/similar").json()["hits"]
    )
    both = client.get("/api/search", params={"like": red, "q": "yellow", "limit": 3}).json()
    assert both["hits"]
    assert client.get("/api/items/999999/similar").status_code == 404
    assert client.get("/api/search", params={"like": 999999}).status_code == 404
    scores = [h["score"] for h in similar["hits"]]
    middle = len(scores) // 2
    floor = (scores[middle - 1] + scores[middle]) / 2
    above = client.get(f"/api/items/{red}/similar", params={"limit": 10, "min_score": floor}).json()["hits"]
    assert [h["score"] for h in above] == scores[:middle]
    auto = client.get(f"/api/items/{red}/similar", params={"limit": 10, "min_score": "auto"})
    assert auto.status_code == 200 and 0 < len(auto.json()["hits"]) <= len(scores)
    assert [h["id"] for h in auto.json()["hits"]] == [h["id"] for h in similar["hits"]][: len(auto.json()["hits"])]


def test_batch_and_embeddings(client: TestClient, library: Library) -> None:
    body = client.post("/api/search/batch", json={"queries": ["red", "blue"], "limit": 2}).json()
    assert [len(r["ids"]) for r in body["results"]] == [2, 2]
    single = client.get("/api/search", params={"q": "blue", "limit": 2}).json()
    assert body["results"][1]["ids"] == [h["id"] for h in single["hits"]]
    # the same filters as a single search, for every query of the batch
    filters = {"ext": ["png"], "under": str(library.photos / "sub"), "min_size": "100x70"}
    batch = client.post("/api/search/batch", json={"queries": ["red", "blue"], "limit": 50, **filters}).json()
    for result, q in zip(batch["results"], ["red", "blue"]):
        one = client.get("/api/search", params={"q": q, "limit": 50, **filters}).json()
        assert result["ids"] == [h["id"] for h in one["hits"]] and _names(one) == ["blue.png"]
    bad_date = client.post("/api/search/batch", json={"queries": ["red"], "after": "not a date"})
    assert bad_date.status_code == 400 and "date" in bad_date.json()["detail"]
    vectors = client.post("/api/embed/texts", json={"texts": ["red", "a dog"]}).json()
    assert vectors["dim"] == FAKE_DIM and len(vectors["vectors"]) == 2
    assert abs(sum(x * x for x in vectors["vectors"][0]) - 1.0) < 1e-4
    expected = fake_model().embed_texts(["red"])[0]
    assert max(abs(a - b) for a, b in zip(vectors["vectors"][0], expected)) < 1e-5
    images = client.post(
        "/api/embed/images",
        files=[
            ("images", ("a.png", _png(COLOURS["red"]), "image/png")),
            ("images", ("b.png", _png(COLOURS["blue"]), "image/png")),
        ],
    )
    assert images.status_code == 200 and len(images.json()["vectors"]) == 2
    assert client.post("/api/search/batch", json={"queries": []}).status_code == 422
    assert client.post("/api/search/batch", json={"queries": ["ok", " "]}).status_code == 400
    assert client.post("/api/search/batch", json={"queries": ["x"] * 1000}).status_code == 422
    assert client.post("/api/embed/texts", json={"texts": "not a list"}).status_code == 422


# --- items ----------------------------------------------------------------------------------
def test_item_metadata_with_matching_texts(client: TestClient, library: Library) -> None:
    ids = library.ids()
    item = client.get(f"/api/items/{ids['rotated.jpg']}").json()
    assert item["name"] == "rotated.jpg" and (item["width"], item["height"]) == (60, 90)  # EXIF orientation
    assert item["taken_at"].startswith("2020-01-02T03:04:05") and item["size"] > 0 and item["modified"]
    red = client.get(f"/api/items/{ids['red.jpg']}").json()
    assert red["texts"][0]["text"] == "a red thing"
    text = client.get(f"/api/items/{red['texts'][0]['id']}", params={"kind": "text"}).json()
    assert text["kind"] == "text" and text["text"] == "a red thing"
    assert client.get("/api/items/424242").status_code == 404


def test_thumbnail_is_oriented_cached_and_revalidated(client: TestClient, library: Library) -> None:
    item = library.ids()["rotated.jpg"]
    first = client.get(f"/api/items/{item}/thumbnail")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(first.content)).size == (60, 90)  # portrait, as the camera meant
    cached = list((library.cache / "thumbnails").rglob("*.jpg"))
    assert cached
    again = client.get(f"/api/items/{item}/thumbnail", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_original_file_with_sniffed_type(client: TestClient, library: Library) -> None:
    item = library.ids()["blue.png"]
    response = client.get(f"/api/items/{item}/file")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (library.photos / "sub" / "blue.png").read_bytes()


def test_info_and_errors(client: TestClient, library: Library) -> None:
    info = client.get("/api/info").json()
    assert info["images"] == 6 and info["texts"] == 3 and info["model"] and info["dim"] == FAKE_DIM
    assert info["read_only"] is True and info["roots"] == [str(library.photos)]
    texts = info["signals"]["photo_text"]  # as `xmodal info` counts them
    assert {"photos_read", "photos_with_text", "frames_read", "frames_with_text"} <= set(texts)
    assert client.get("/api/errors").json() == []
    assert client.get("/api/index").json()["state"] == "idle"


def test_openapi_and_docs_page(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/items/{item_id}/similar", "/api/items/{item_id}/thumbnail", "/api/health"} <= set(
        schema["paths"]
    )
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text and "cdn" not in docs.text.lower()


def test_page_opens_with_the_query_results(client: TestClient) -> None:
    page = client.get("/", params={"q": "red"})
    assert page.status_code == 200 and 'value="red"' in page.text
    assert "red.jpg" in page.text.split('id="results"')[1]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")


# --- safe by default ------------------------------------------------------------------------
def test_paths_are_never_taken_from_requests(client: TestClient) -> None:
    for url in [
        "/api/items/../../etc/passwd",
        "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumbnail",
        "/api/items/%2Fetc%2Fpasswd",
        "/api/items/..%252f..%252fetc%252fpasswd/file",
        "/static/..%2f..%2fapp.py",
        "/static/",
        "/static/index.html",
        "/api/items/1/../../../../etc/passwd",
    ]:
        assert client.get(url).status_code in (404, 422), url
    for url in [
        "/api/items/-1",
        "/api/items/abc/thumbnail",
        "/api/items/99999999999999999999999/file",
        "/api/items/1.5",
    ]:
        assert client.get(url).status_code == 422, url
    for q in [
        "/etc/passwd.jpg",
        "../../../etc/x.png",
        "~/secret.jpg",
        '"dog" + /etc/hostname.png',
        "nonexistent-file.jpg",
    ]:
        response = client.get("/api/search", params={"q": q})
        assert response.status_code == 422 and "not read over HTTP" in response.json()["detail"], q


def test_a_swapped_file_or_escaping_symlink_is_not_served(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_image(photos / "a.jpg", COLOURS["red"])
    make_image(photos / "b.jpg", COLOURS["blue"])
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    Indexer(tmp_path / "index", model=fake_model(), workers=1).add_paths([photos])
    library = Library(photos, tmp_path / "index", tmp_path / "cache")
    ids = library.ids()
    (photos / "a.jpg").unlink()
    os.symlink(outside, photos / "a.jpg")  # after indexing, the photo becomes a link out of the folder
    with TestClient(make_app(library), base_url=BASE) as c:
        for route in ("file", "thumbnail"):
            response = c.get(f"/api/items/{ids['a.jpg']}/{route}")
            assert response.status_code == 404 and b"secret" not in response.content
        assert c.get(f"/api/items/{ids['b.jpg']}/file").status_code == 200


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_uploads_are_capped_and_sniffed(library: Library) -> None:
    with TestClient(make_app(library, limits=Limits(max_upload_bytes=100_000)), base_url=BASE) as c:
        big = c.post("/api/search", files={"image": ("big.png", os.urandom(150_000), "image/png")})
        assert big.status_code == 413 and "cap" in big.json()["detail"]
        bomb = c.post("/api/search", files={"image": ("bomb.png", _png_header_only(40_000, 40_000), "image/png")})
        assert bomb.status_code == 413 and "pixels" in bomb.json()["detail"]
        fake_jpeg = c.post(
            "/api/search", files={"image": ("photo.jpg", b"<?php system($_GET['c']); ?>" * 10, "image/jpeg")}
        )
        assert fake_jpeg.status_code == 415
        assert c.post("/api/search", files={"image": ("empty.jpg", b"", "image/jpeg")}).status_code == 422
        truncated = _png(COLOURS["red"], (300, 300))[:200]
        assert c.post("/api/search", files={"image": ("t.png", truncated, "image/png")}).status_code == 422
        assert c.post("/api/search").status_code == 400  # nothing to search by
        assert c.get("/api/health").status_code == 200


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"q": ""}, 400),
        ({"q": "   "}, 400),
        ({"q": "x" * 60_000}, 422),  # 100 KB: over the test client's URL cap; tests/test_server_process.py sends it raw
        ({"q": "red\x00green"}, 400),
        ({"q": "red\x1b[31m"}, 400),
        ({"q": "red", "limit": 10**12}, 422),
        ({"q": "red", "limit": 0}, 422),
        ({"q": "red", "limit": -5}, 422),
        ({"q": "red", "limit": "many"}, 422),
        ({"q": "red", "offset": 10**9}, 422),
        ({"q": "red", "target": "video"}, 422),
        ({"q": "red", "cursor": "garbage!"}, 422),
        ({"q": "red", "after": "not a date"}, 400),
        ({"q": "red", "min_size": "bigxsmall"}, 400),
        ({"q": "red", "min_score": "nan"}, 422),
        ({"q": "red", "diverse": 7}, 422),
        ({"q": "'unbalanced"}, 200),
        ({"q": "+"}, 400),
    ],
)
def test_hostile_query_strings_get_a_clear_4xx(client: TestClient, params: dict, status: int) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == status, response.text
    body = response.json()
    if status != 200:
        assert isinstance(body["detail"], str) and body["detail"] and "Traceback" not in body["detail"]
    assert client.get("/api/search", params={"q": "red"}).status_code == 200  # still serving


def test_invalid_utf8_in_the_query_string(client: TestClient) -> None:
    response = client.get("/api/search?q=%FF%FE%80abc")
    assert response.status_code == 400 and "UTF-8" in response.json()["detail"]
    assert client.get("/api/search?q=%C3%A9t%C3%A9").status_code == 200  # "été"


def test_foreign_host_header_is_refused_without_a_token(client: TestClient) -> None:
    refused = client.get("/api/search", params={"q": "red"}, headers={"Host": "attacker.example"})
    assert refused.status_code == 400 and "127.0.0.1 or localhost" in refused.json()["detail"]
    assert client.get("/api/health", headers={"Host": "localhost:8765"}).status_code == 200


def test_cors_is_off_unless_asked(library: Library, client: TestClient) -> None:
    plain = client.get("/api/search", params={"q": "red"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers
    with TestClient(make_app(library, cors_origins=("https://photos.example",)), base_url=BASE) as c:
        allowed = c.get("/api/search", params={"q": "red"}, headers={"Origin": "https://photos.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://photos.example"
        other = c.get("/api/search", params={"q": "red"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_html_escapes_paths_and_has_a_strict_policy(client: TestClient) -> None:
    page = client.get("/", params={"q": "red"})
    assert XSS_NAME not in page.text and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    hostile_query = client.get("/", params={"q": '"><script>alert(1)</script>'})
    assert "<script>alert(1)" not in hostile_query.text


def test_token_protects_everything_but_health(library: Library) -> None:
    token = "correct horse battery staple"
    with TestClient(make_app(library, token=token, loopback_only=False), base_url="http://photos.lan") as c:
        assert c.get("/api/health").status_code == 200
        for url in [
            "/api/search?q=red",
            "/api/info",
            "/api/items/1",
            "/api/items/1/thumbnail",
            "/openapi.json",
            "/docs",
            "/static/app.js",
        ]:
            response = c.get(url)
            assert response.status_code == 401, url
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/search?q=red", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/search?q=red", headers={"Authorization": f"Basic {token}"}).status_code == 401
        assert c.get("/api/search?q=red", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        page = c.get("/")
        assert page.status_code == 401 and 'name="token"' in page.text
        policies = page.headers.get_list("content-security-policy")
        assert len(policies) == 1 and "'sha256-" in policies[0]  # only the login page's own style
        assert c.post("/login", data={"token": "nope"}).status_code == 401
        login = c.post("/login", data={"token": token}, follow_redirects=False)
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        assert token not in login.headers["set-cookie"]
        assert c.get("/").status_code == 200  # the cookie now stands for the token
        assert c.get("/api/search?q=red").status_code == 200
        c.post("/logout")
        c.cookies.clear()
        assert c.get("/api/search?q=red").status_code == 401


# --- indexing over HTTP and an index that changes under the server ---------------------------
def test_read_only_unless_allowed(client: TestClient) -> None:
    response = client.post("/api/index", json={"paths": []})
    assert response.status_code == 403 and "--allow-index" in response.json()["detail"]


def test_index_run_over_http_under_the_roots_only(tmp_path: Path) -> None:
    library = build_library(tmp_path)
    with TestClient(make_app(library, allow_index=True), base_url=BASE) as c:
        for path in ["/etc", str(library.photos.parent), "relative/folder", str(library.photos / ".." / "index")]:
            response = c.post("/api/index", json={"paths": [path]})
            assert response.status_code == 422, path
        link = library.photos / "escape"
        os.symlink("/etc", link)
        assert c.post("/api/index", json={"paths": [str(link)]}).status_code == 422
        make_image(library.photos / "new" / "cyan.png", (30, 220, 220))
        started = c.post("/api/index", json={"paths": [str(library.photos)]})
        assert started.status_code == 202 and started.json()["state"] == "running"
        c.app.state.xmodal.jobs.wait(60)
        status = c.get("/api/index").json()
        assert status["state"] == "done" and status["summary"]["new"] == 1, status
        names = _names(c.get("/api/search", params={"q": "cyan thing", "limit": 50}).json())
        assert "cyan.png" in names


def test_photos_indexed_by_another_writer_appear_without_a_restart(tmp_path: Path) -> None:
    library = build_library(tmp_path)
    with TestClient(make_app(library), base_url=BASE) as c:
        assert "cyan.png" not in _names(c.get("/api/search", params={"q": "x", "limit": 50}).json())
        make_image(library.photos / "later" / "cyan.png", (30, 220, 220))
        Indexer(library.index, model=fake_model(), workers=1).add_paths([library.photos])
        c.app.state.xmodal.live.refresh()
        assert "cyan.png" in _names(c.get("/api/search", params={"q": "x", "limit": 50}).json())
        assert c.app.state.xmodal.live.swaps == 1


def test_an_index_empty_at_start_answers_once_photos_are_indexed(tmp_path: Path) -> None:
    photos, index = tmp_path / "photos", tmp_path / "index"
    make_image(photos / "red.jpg", COLOURS["red"])
    IndexStore.open(index, create=True).close()  # an index with nothing in it: no model recorded yet
    with TestClient(make_app(Library(photos, index, tmp_path / "cache")), base_url=BASE) as c:
        empty = c.get("/api/search", params={"q": "red"})
        assert empty.status_code == 200 and empty.json()["hits"] == []
        assert c.post("/api/search/batch", json={"queries": ["red"]}).json()["results"][0]["ids"] == []
        Indexer(index, model=fake_model(), workers=1).add_paths([photos])
        c.app.state.xmodal.live.refresh()
        assert _names(c.get("/api/search", params={"q": "red"}).json()) == ["red.jpg"]
        assert len(c.post("/api/search/batch", json={"queries": ["red"]}).json()["results"][0]["ids"]) == 1
