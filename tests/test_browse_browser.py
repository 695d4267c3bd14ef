"""The gallery's landing page in a real headless Chromium (Debian's chromium + chromium-driver,
Selenium): the library by month, newest first, more months as the page scrolls; its places; picking
a place or a month fills the search box and the filters and shows exactly those photos; a photo's
facts in the large view. With CI=true a missing browser is a failure, never a skip."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.facts_photos import Shot, exif_photo
from tests.serving import Library, make_app, running_server
from tests.test_browse_server import build_facts_library

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).parent / "artifacts"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests need {CHROMIUM} and {CHROMEDRIVER}", pytrace=False)
    pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow
EXTRA_MONTHS = 9  # photos of Jan-Sep 2022: 15 months in all, more than the first page's 6


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("browse-browser")
    for month in range(1, EXTRA_MONTHS + 1):
        exif_photo(root / "photos" / "2022" / f"month{month:02d}.jpg", Shot(f"2022:{month:02d}:15 10:00:00"), month)
    return build_facts_library(root)


@pytest.fixture(scope="module")
def base_url(library: Library) -> Iterator[str]:
    with running_server(make_app(library)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
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
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], object], timeout: float = 15) -> object:
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def _months(driver: webdriver.Chrome) -> list[str]:
    return [s.get_attribute("data-month") for s in driver.find_elements(By.CSS_SELECTOR, "#months .month")]


def _captions(driver: webdriver.Chrome) -> set[str]:
    return {t.get_attribute("textContent") for t in driver.find_elements(By.CSS_SELECTOR, "#results .hit .caption")}


def _facts(driver: webdriver.Chrome) -> str:
    return driver.find_element(By.ID, "v-facts").text


def test_landing_page_by_month_and_place(browser: webdriver.Chrome, base_url: str) -> None:
    browser.get(base_url + "/")
    _wait(browser, lambda d: len(_months(d)) >= 6)
    assert browser.find_element(By.ID, "browse").is_displayed()
    assert _months(browser)[:3] == ["2025-07", "2025-06", "2024-12"]  # newest first
    first = browser.find_element(By.CSS_SELECTOR, '#months .month[data-month="2025-06"]')
    assert "2 photos" in first.text and len(first.find_elements(By.CSS_SELECTOR, ".thumb img")) == 2
    places = [b.get_attribute("data-place") for b in browser.find_elements(By.CSS_SELECTOR, "#places .place")]
    assert places[0] == "Portugal" and {"Lisbon", "Porto", "Tokyo", "Japan"} <= set(places)
    assert len(places) == len(set(places))  # a city and its region of one name: one button
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browse_landing.png"))
    # scrolling down loads the older months
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    _wait(browser, lambda d: len(_months(d)) > 6)
    for _ in range(5):
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        if "2018-05" in _months(browser):
            break
        _wait(browser, lambda d: len(_months(d)) % 6 == 0 or "2018-05" in _months(d))
    _wait(browser, lambda d: _months(d)[-1] == "2018-05")
    assert len(_months(browser)) == len(set(_months(browser))) == 6 + EXTRA_MONTHS


def test_picking_a_place_then_a_month_searches_them(browser: webdriver.Chrome, base_url: str) -> None:
    browser.get(base_url + "/")
    button = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#places .place[data-place="Lisbon"]'))[0]  # type: ignore[index]
    button.click()
    _wait(browser, lambda d: _captions(d) == {"tram.jpg", "beach.jpg"})
    assert browser.find_element(By.ID, "q").get_attribute("value") == "Lisbon"
    assert browser.find_element(By.ID, "f-place").get_attribute("value") == "Lisbon"
    assert "place=Lisbon" in browser.current_url and not browser.find_element(By.ID, "browse").is_displayed()
    # the large view shows the photo's facts
    browser.find_element(By.CSS_SELECTOR, "#results .hit").click()
    facts = _wait(browser, lambda d: "Place" in _facts(d) and _facts(d))
    assert "Lisbon, Portugal" in facts and "UTC+01:00" in facts and "camera clock (EXIF)" in facts  # type: ignore[operator]
    browser.find_element(By.ID, "close").click()
    # back to the landing page, then a month
    browser.back()
    _wait(browser, lambda d: d.find_element(By.ID, "browse").is_displayed())
    month = browser.find_element(By.CSS_SELECTOR, '#months .month[data-month="2025-06"] .month-pick')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", month)
    month.click()
    _wait(browser, lambda d: _captions(d) == {"beach.jpg", "bridge.jpg"})
    assert browser.find_element(By.ID, "q").get_attribute("value") == "2025-06"
    assert browser.find_element(By.ID, "f-after").get_attribute("value") == "2025-06-01"
    assert browser.find_element(By.ID, "f-before").get_attribute("value") == "2025-07-01"
