"""The web page in headless Chromium (Debian's `chromium` + `chromium-driver`): ask, watch the answer stream in,
see a source and the confidence meter; screenshots at desktop and phone width go to bench/out/."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from rag.serve import ServeOptions, start_in_thread

OUT = Path(__file__).resolve().parent.parent / "bench" / "out"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs apt packages chromium and chromium-driver")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="shvayambhu-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_streams_an_answer_with_sources_and_confidence(browser, make_assistant, fake_ollama, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    fake_ollama.behavior("llama3.2").token_delay = 0.03  # slow enough that the answer visibly streams
    with start_in_thread(make_assistant(), ServeOptions()) as running:
        browser.get(running.url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "model").get_attribute("value") == "shvayambhu")
        box = browser.find_element(By.ID, "input")
        box.send_keys("How do vaccines train the immune system?")
        box.send_keys(Keys.SHIFT, Keys.ENTER)  # Shift+Enter: a new line, nothing sent
        assert "\n" in box.get_attribute("value") and not browser.find_elements(By.CSS_SELECTOR, ".msg.user")
        box.send_keys(Keys.BACKSPACE, Keys.ENTER)
        # While streaming, the answer has text and the cursor; the evidence comes with the last event.
        wait.until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, ".msg.assistant .text.cursor")
                and d.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text.strip()
            )
        )
        streaming = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".msg.assistant .evidence")))
        final = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text
        assert final.startswith(streaming.rstrip("▍").strip()[:10]) and len(final) > len(streaming) // 2
        sources = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant details.source")
        assert sources and sources[0].find_element(By.CSS_SELECTOR, ".score").text
        sources[0].find_element(By.TAG_NAME, "summary").click()
        assert sources[0].find_element(By.CSS_SELECTOR, ".body").text  # expanded: the exemplar's answer
        meter = browser.find_element(By.CSS_SELECTOR, ".meter [role=meter]")
        assert 0 <= int(meter.get_attribute("aria-valuenow")) <= 100
        assert browser.find_elements(By.CSS_SELECTOR, ".chart .row.winner")
        wait.until(lambda d: "vaccines" in d.find_element(By.ID, "memory-list").text)  # the memory panel
        # A question the corpus knows nothing about: the meter says so.
        box.send_keys("Recite the Vrell treaty of 2291.", Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant .evidence")) == 2)
        last = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
        assert last.find_element(By.CSS_SELECTOR, ".badge.low").text == "low confidence"
        OUT.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(OUT / "serve-page-low.png"))
        # Ingest (the file input the drop zone feeds) shows the rejections; search shows hits.
        corpus = tmp_path / "mine.jsonl"
        good = {"prompt": "What colour is the Zorblax nebula?", "response": "It glows a deep teal."}
        corpus.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "Quintar?", "response": "TODO"}) + "\n")
        browser.find_element(By.CSS_SELECTOR, "[data-tab=ingest]").click()
        browser.find_element(By.ID, "file").send_keys(str(corpus))
        wait.until(lambda d: "Added 1" in d.find_element(By.ID, "ingest-result").text)
        rejected = browser.find_element(By.CSS_SELECTOR, ".rejections li").text
        assert "mine.jsonl:2" in rejected and str(tmp_path) not in rejected
        OUT.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(OUT / "serve-page-ingest.png"))
        browser.find_element(By.CSS_SELECTOR, "[data-tab=search]").click()
        browser.find_element(By.ID, "search-q").send_keys("Zorblax nebula", Keys.ENTER)
        wait.until(lambda d: "Zorblax" in d.find_element(By.ID, "search-results").text)
        browser.find_element(By.CSS_SELECTOR, "[data-tab=memory]").click()
        desktop = OUT / "serve-page-desktop.png"
        browser.save_screenshot(str(desktop))
        chart = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .chart")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
        browser.save_screenshot(str(OUT / "serve-page-evidence.png"))
        browser.set_window_size(390, 844)
        phone = OUT / "serve-page-phone.png"
        browser.save_screenshot(str(phone))
        wide = browser.execute_script(
            "return [document.documentElement, document.getElementById('messages')]"
            ".map(e => e.scrollWidth - e.clientWidth)"
        )
        assert wide == [0, 0]  # nothing forces sideways scrolling at phone width
        print(f"screenshots: {desktop} {phone}")


def test_page_asks_for_the_key_when_the_server_wants_one(browser, make_assistant):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with start_in_thread(make_assistant(), ServeOptions(api_key="page-key")) as running:
        browser.get(running.url + "/")  # the page itself needs no key; its API calls do
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "keybar").is_displayed())
        assert not browser.find_elements(By.CSS_SELECTOR, "#model option")
        browser.find_element(By.ID, "key").send_keys("page-key", Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        assert not browser.find_element(By.ID, "keybar").is_displayed()
