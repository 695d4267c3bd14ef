"""The gallery's chips (understanding.js) in a real headless Chromium: a query with a date shows what
it was read as; removing the date chip searches again without it; each hit says what it matched."""

from __future__ import annotations

import pytest

from tests.test_server_browser import _captions, _tiles, _wait, base_url, browser, library  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def test_chips_show_the_reading_and_can_be_removed(browser, base_url: str) -> None:  # noqa: ANN001, F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(base_url + "/")
    browser.find_element(By.ID, "q").send_keys("a photo from 2020", Keys.ENTER)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#understood .chip-date"))
    chip = browser.find_element(By.CSS_SELECTOR, "#understood .chip-date").get_attribute("textContent")
    assert "2020-01-01" in chip and "2020-12-31" in chip
    _wait(browser, lambda d: _captions(d) == ["rotated.jpg"])  # the one photo taken in 2020
    badge = _tiles(browser)[0].find_element(By.CSS_SELECTOR, ".matched").get_attribute("textContent")
    assert badge == "date"
    browser.find_element(By.CSS_SELECTOR, "#understood .chip-date .chip-remove").click()
    _wait(browser, lambda d: len(_captions(d)) > 1)  # every photo again: "2020" is now description
    assert not browser.find_elements(By.CSS_SELECTOR, "#understood .chip-date")
