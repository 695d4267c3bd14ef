"""The server and camera RAW (issue 25): thumbnails and the display view of a DNG are JPEGs made by
LibRaw (upright), the file itself is served as it is; and `/api/items/{id}/file` answers HTTP Range
requests (206, 416) so that a browser can seek in a long file (a video). In-process, over httpx."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from tests.raw_files import FLICKR, flickr_photo, make_dng
from tests.serving import Library, make_app
from xmodal.indexer.indexing import Indexer

BASE = "http://127.0.0.1"
pytestmark = pytest.mark.skipif(not FLICKR.is_dir(), reason="needs ../shared/datasets/flickr8k-1k")
PORTRAIT = "177302997_5b2d770a0a.jpg"  # 375x500


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("server-raw")
    photos = root / "photos"
    make_image(photos / "red.jpg", COLOURS["red"], size=(120, 80))
    make_dng(photos / "turned.dng", flickr_photo(PORTRAIT), orientation=6)  # no preview: LibRaw demosaics
    make_dng(photos / "IMG_0002.CR2.dng", flickr_photo(PORTRAIT), orientation=8, preview=True)
    index = root / "index"
    summary = Indexer(index, model=fake_model(), workers=1).add_paths([photos])
    assert (summary.new, summary.failed) == (3, 0), summary.failures
    return Library(photos, index, root / "cache")


@pytest.fixture(scope="module")
def client(library: Library):  # noqa: ANN201
    with TestClient(make_app(library), base_url=BASE) as c:
        yield c


@pytest.mark.parametrize("name", ["turned.dng", "IMG_0002.CR2.dng"])
def test_thumbnail_and_view_of_a_raw_are_upright_jpegs(client: TestClient, library: Library, name: str) -> None:
    item = library.ids()[name]
    for route in ("thumbnail", "view"):
        response = client.get(f"/api/items/{item}/{route}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(response.content)) as im:
            assert im.format == "JPEG" and im.width < im.height  # the portrait, turned back
    meta = client.get(f"/api/items/{item}").json()
    assert (meta["width"], meta["height"]) == (374, 500)


def test_the_raw_file_itself_is_served_as_it_is(client: TestClient, library: Library) -> None:
    item = library.ids()["turned.dng"]
    response = client.get(f"/api/items/{item}/file")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == (library.photos / "turned.dng").read_bytes()


def test_the_file_answers_range_requests(client: TestClient, library: Library) -> None:
    item = library.ids()["turned.dng"]
    data = (library.photos / "turned.dng").read_bytes()
    size = len(data)
    url = f"/api/items/{item}/file"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(size)
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=100-": (100, size - 1),
        "bytes=-500": (size - 500, size - 1),
        f"bytes=1000-{size + 5000}": (1000, size - 1),  # a last byte past the end is the end
        f"bytes={size - 1}-{size - 1}": (size - 1, size - 1),
    }
    for header, (first, last) in cases.items():
        response = client.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert response.headers["content-length"] == str(last - first + 1)
        assert response.content == data[first : last + 1], header
    # past the end: 416, with the size, as JSON
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = client.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.json()["status"] == 416
    # what a server may ignore is answered whole: another unit, several ranges, nonsense
    for header in ("items=0-5", "bytes=0-5,10-15", "bytes=abc", "bytes=9-3"):
        response = client.get(url, headers={"Range": header})
        assert (response.status_code, len(response.content)) == (200, size), header
    # If-Range: the range only while the file is the one the client saw
    etag = whole.headers["etag"]
    assert client.get(url, headers={"Range": "bytes=0-3", "If-Range": etag}).status_code == 206
    stale = client.get(url, headers={"Range": "bytes=0-3", "If-Range": '"something-else"'})
    assert (stale.status_code, len(stale.content)) == (200, size)


def test_a_jpeg_view_answers_ranges_too(client: TestClient, library: Library) -> None:
    item = library.ids()["red.jpg"]
    data = (library.photos / "red.jpg").read_bytes()
    response = client.get(f"/api/items/{item}/view", headers={"Range": "bytes=2-5"})
    assert response.status_code == 206 and response.content == data[2:6]


def test_a_raw_upload_as_a_query_is_refused_with_a_reason(client: TestClient, library: Library) -> None:
    data = (library.photos / "turned.dng").read_bytes()
    response = client.post("/api/search", files={"image": ("q.dng", data, "application/octet-stream")})
    assert response.status_code == 415
    assert "camera RAW" in response.json()["detail"]


def test_a_missing_file_is_still_404(client: TestClient, library: Library, tmp_path: Path) -> None:
    response = client.get("/api/items/999999/file", headers={"Range": "bytes=0-1"})
    assert response.status_code == 404
