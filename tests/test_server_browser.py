"""The web gallery in a real headless Chromium (Debian's chromium + chromium-driver, Selenium):
type a query, see the photo, open it, more like this, search by an uploaded photo, the keyboard,
escaped hostile names, a phone-sized screen, and 60 thumbnails in under a second with a warm cache.

With CI=true a missing browser is a failure, never a skip (.ci/run installs it).
A screenshot of the results page is kept in tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.serving import XSS_NAME, Library, build_library, make_app, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"
_HAVE_BROWSER = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)

if not _HAVE_BROWSER:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(
            f"browser tests need {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return build_library(tmp_path_factory.mktemp("browser"), extra=64)


@pytest.fixture(scope="module")
def base_url(library: Library) -> Iterator[str]:
    with running_server(make_app(library)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    # The network here is closed: without the background-networking flags Chromium keeps trying
    # to reach its update and sync services.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# How many tiles the first row of the grid holds.
_COLUMNS_JS = (
    "const t=document.querySelectorAll('#results .hit');let n=0;"
    "while(n<t.length&&t[n].offsetTop===t[0].offsetTop)n++;return n;"
)


def _wait(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], object], timeout: float = 15) -> object:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def _tiles(driver: webdriver.Chrome) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#results .hit")


def _captions(driver: webdriver.Chrome) -> list[str]:
    return [
        t.find_element(By.CSS_SELECTOR, ".caption").get_attribute("textContent")
        for t in _tiles(driver)
        if "text" not in t.get_attribute("class")
    ]


def _no_alert(driver: webdriver.Chrome) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - the property raises when there is no alert
    except NoAlertPresentException:
        return True
    return False


def test_type_a_query_open_it_and_more_like_this(browser: webdriver.Chrome, base_url: str, library: Library) -> None:
    browser.get(base_url + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("blue", Keys.ENTER)
    _wait(browser, lambda d: "blue.png" in _captions(d)[:3])
    assert "q=blue" in browser.current_url  # the search can be bookmarked
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "gallery.png"))

    tile = next(
        t
        for t in _tiles(browser)
        if t.find_element(By.CSS_SELECTOR, ".caption").get_attribute("textContent") == "blue.png"
    )
    blue_id = tile.get_attribute("data-id")
    tile.click()
    _wait(browser, lambda d: d.find_element(By.ID, "viewer").is_displayed())
    _wait(browser, lambda d: d.find_element(By.ID, "v-facts").text != "")
    assert browser.find_element(By.ID, "v-path").text == str(library.photos / "sub" / "blue.png")
    assert "200 × 150" in browser.find_element(By.ID, "v-facts").text
    _wait(
        browser,
        lambda d: (
            d.execute_script(
                "return document.getElementById('big').complete && document.getElementById('big').naturalWidth"
            )
            == 200
        ),
    )
    browser.save_screenshot(str(ARTIFACTS / "viewer.png"))

    browser.find_element(By.ID, "more").click()
    _wait(browser, lambda d: f"like={blue_id}" in d.current_url and len(_tiles(d)) > 0)
    assert not browser.find_element(By.ID, "viewer").is_displayed()
    assert blue_id not in [t.get_attribute("data-id") for t in _tiles(browser)]  # never the photo itself

    browser.back()  # history: back to the text search
    _wait(browser, lambda d: "q=blue" in d.current_url and "blue.png" in _captions(d)[:3])


def test_search_by_uploading_a_photo(browser: webdriver.Chrome, base_url: str, library: Library) -> None:
    browser.get(base_url + "/")
    browser.find_element(By.ID, "file").send_keys(str(library.photos / "yellow.jpg"))
    _wait(browser, lambda d: _captions(d)[:1] == ["yellow.jpg"])
    assert "yellow.jpg" in browser.find_element(By.ID, "status").text


def test_a_chinese_query_shows_how_it_was_read(browser: webdriver.Chrome, base_url: str) -> None:
    browser.get(base_url + "/?q=红色")  # first page rendered by the server
    visual = "#understood .chip-visual"  # understanding.js: the reading is part of what the query was read as
    chips = lambda d: [c.get_attribute("textContent") for c in d.find_elements(By.CSS_SELECTOR, visual)]  # noqa: E731
    _wait(browser, lambda d: chips(d) == ["looks like 红色 (red)"])
    assert _captions(browser)[0] == "red.jpg"
    browser.find_element(By.ID, "q").clear()
    browser.find_element(By.ID, "q").send_keys("blue", Keys.ENTER)  # then English: no reading ("blue" is a name here)
    _wait(browser, lambda d: "blue.png" in _captions(d)[:1] and chips(d) in ([], ["looks like blue"]))


def test_keyboard_navigation(browser: webdriver.Chrome, base_url: str) -> None:
    browser.get(base_url + "/?q=red")
    _wait(browser, lambda d: len(_tiles(d)) > 5)
    active = lambda d: d.switch_to.active_element  # noqa: E731
    browser.find_element(By.ID, "q").click()
    active(browser).send_keys(Keys.ARROW_DOWN)
    assert active(browser).get_attribute("data-index") == "0"
    active(browser).send_keys(Keys.ARROW_RIGHT)
    assert active(browser).get_attribute("data-index") == "1"
    columns = browser.execute_script(_COLUMNS_JS)
    active(browser).send_keys(Keys.ARROW_DOWN)
    assert active(browser).get_attribute("data-index") == str(1 + columns)
    active(browser).send_keys(Keys.ARROW_LEFT)
    assert active(browser).get_attribute("data-index") == str(columns)
    name = active(browser).find_element(By.CSS_SELECTOR, ".caption").get_attribute("textContent")
    active(browser).send_keys(Keys.ENTER)
    _wait(browser, lambda d: d.find_element(By.ID, "viewer").is_displayed())
    assert browser.find_element(By.ID, "v-name").text == name
    active(browser).send_keys(Keys.ARROW_RIGHT)
    _wait(browser, lambda d: d.find_element(By.ID, "v-name").text != name)
    active(browser).send_keys(Keys.ESCAPE)
    _wait(browser, lambda d: not d.find_element(By.ID, "viewer").is_displayed())
    assert active(browser).get_attribute("data-index") == str(columns + 1)  # focus back on the tile


def test_hostile_file_name_shows_as_text(browser: webdriver.Chrome, base_url: str) -> None:
    browser.get(base_url + "/?q=red&limit=60")
    _wait(browser, lambda d: XSS_NAME in _captions(d))
    assert _no_alert(browser)
    assert browser.execute_script("return document.querySelectorAll('#results img[src=\"x\"]').length") == 0
    browser.find_element(By.ID, "q").clear()
    browser.find_element(By.ID, "q").send_keys("<img src=x onerror=alert(2)>", Keys.ENTER)
    _wait(browser, lambda d: "onerror=alert(2)" in d.find_element(By.ID, "status").text)
    assert _no_alert(browser)


def test_sixty_thumbnails_load_in_under_a_second_with_a_warm_cache(browser: webdriver.Chrome, base_url: str) -> None:
    all_loaded = (
        "return [...document.querySelectorAll('#results img')].filter(i => i.complete && i.naturalWidth > 0).length"
    )
    browser.get(base_url + "/?q=grey")
    _wait(browser, lambda d: d.execute_script(all_loaded) >= 60, timeout=60)  # makes the thumbnails
    browser.execute_script("window.performance.clearResourceTimings()")
    started = time.perf_counter()
    browser.get(base_url + "/?q=grey")
    _wait(browser, lambda d: d.execute_script(all_loaded) >= 60)
    wall = time.perf_counter() - started
    in_page = browser.execute_script(
        "const r=performance.getEntriesByType('resource').filter(e=>e.name.includes('/thumbnail'));"
        "return [r.length, Math.max(...r.map(e=>e.responseEnd))];"
    )
    assert in_page[0] >= 60 or wall < 1.0  # thumbnails fetched (or served by the browser's cache)
    assert in_page[1] < 1000, in_page  # ms from navigation start until the last thumbnail arrived
    assert wall < 2.0, wall  # including WebDriver's own polling


def test_phone_sized_screen(browser: webdriver.Chrome, base_url: str) -> None:
    browser.set_window_size(390, 844)
    try:
        browser.get(base_url + "/?q=red")
        _wait(browser, lambda d: len(_tiles(d)) > 3)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        columns = browser.execute_script(_COLUMNS_JS)
        assert columns >= 3
        _tiles(browser)[0].click()
        _wait(browser, lambda d: d.find_element(By.ID, "viewer").is_displayed())
        assert browser.execute_script(
            "return document.querySelector('#viewer .panel').getBoundingClientRect().width <= window.innerWidth"
        )
        browser.find_element(By.ID, "close").click()
    finally:
        browser.set_window_size(1280, 1000)


def test_api_docs_page_renders_offline(browser: webdriver.Chrome, base_url: str) -> None:
    browser.get(base_url + "/docs")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#routes section")) >= 10)
    text = browser.find_element(By.ID, "routes").text
    assert "/api/search" in text and "/api/items/{item_id}/thumbnail" in text


def test_the_text_in_a_photo_is_shown_and_highlighted(
    browser: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Search by "Text in photo" alone; the large view lists the lines read in the receipt and draws
    their boxes on it, the lines holding the searched word highlighted (real OCR, fake encoder)."""
    from tests.fakes import fake_model
    from tests.rendered_text import receipt
    from xmodal.indexer.indexing import Indexer

    root = tmp_path_factory.mktemp("photo_text_browser")
    receipt(root / "photos" / "receipt.jpg")
    Indexer(root / "index", model=fake_model(), workers=1).add_paths([root / "photos"])
    with running_server(make_app(Library(root / "photos", root / "index", root / "cache"))) as url:
        browser.get(url + "/?in_photo=pharmacy")
        _wait(browser, lambda d: _captions(d) == ["receipt.jpg"])
        assert browser.find_element(By.ID, "f-in_photo").get_attribute("value") == "pharmacy"
        _tiles(browser)[0].click()
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#v-photo-text li")) > 5)
        lines = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#v-photo-text li")]
        marked = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#v-photo-text li.match")]
        assert "TOTAL" in lines and marked == ["CORNER PHARMACY"]
        _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#v-boxes polygon")) == len(lines))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#v-boxes polygon.match")) == 1
        layer = browser.find_element(By.ID, "v-boxes").rect
        picture = browser.find_element(By.ID, "big").rect
        assert all(abs(layer[k] - picture[k]) < 2 for k in ("x", "y", "width", "height")), (layer, picture)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "photo_text.png"))


def test_a_video_hit_opens_playing_from_its_moment(
    browser: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A query for the clip's green segment (3-6 s): the tile shows the moment, and the large view's
    <video> has loaded the file (HTTP Range) and stands at that moment, ready to play from it."""
    from PIL import Image

    from tests.fakes import COLOURS, fake_model
    from tests.videos import write_video
    from xmodal.indexer.indexing import Indexer

    root = tmp_path_factory.mktemp("video_browser")
    colours = [Image.new("RGB", (64, 48), COLOURS[name]) for name in ("red", "green", "blue")]
    write_video(root / "photos" / "clip.mp4", colours)
    Indexer(root / "index", model=fake_model(), workers=1).add_paths([root / "photos"])
    with running_server(make_app(Library(root / "photos", root / "index", root / "cache"))) as url:
        browser.get(url + "/?q=green")
        _wait(browser, lambda d: _captions(d)[:1] == ["clip.mp4"])
        tile = _tiles(browser)[0]
        moment = tile.find_element(By.CSS_SELECTOR, ".moment").get_attribute("textContent")
        assert moment.startswith("▶ 0:0") and 3 <= int(moment[-1]) < 6, moment
        tile.click()
        _wait(browser, lambda d: d.find_element(By.ID, "big-video").is_displayed())
        assert not browser.find_element(By.ID, "big").is_displayed()
        ready = "const v=document.getElementById('big-video');return v.readyState>=1&&!v.seeking&&v.currentTime;"
        now = _wait(browser, lambda d: d.execute_script(ready))
        assert 3.0 <= float(now) < 6.0 and abs(float(now) - int(moment[-1])) < 1.0, (now, moment)  # type: ignore[arg-type]
        assert browser.execute_script("return document.getElementById('big-video').error") is None
        browser.execute_script(
            "document.getElementById('big-video').muted=true;document.getElementById('big-video').play()"
        )
        _wait(
            browser, lambda d: d.execute_script("return document.getElementById('big-video').currentTime") > float(now)
        )  # type: ignore[arg-type]
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # closing the view stops the video
        _wait(browser, lambda d: not d.find_element(By.ID, "viewer").is_displayed())
        assert browser.execute_script("return document.getElementById('big-video').paused")
