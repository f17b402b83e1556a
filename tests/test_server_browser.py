"""The page at / in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium):
type a text, click Speak, and see the streamed samples arrive, as many as the API gives for the request."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from bark_onnx import Bark
from bark_onnx.server import ServerSettings, create_app

from .serving import LiveServer

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# the flags these machines need: no sandbox (root), no GPU, nothing fetched from a network
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage"]


@pytest.fixture
def browser(tmp_path):
    missing = [str(p) for p in (CHROMIUM, DRIVER) if not p.is_file()]
    if missing:
        if os.environ.get("BARK_ONNX_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path / "profile"
    profile.mkdir()
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_page_streams_audio_into_the_browser(browser, model_dirs):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    tts = Bark.load(model_dirs["suno-tiny"], max_batch=2)
    try:
        with LiveServer(create_app(tts, ServerSettings(served_model_name="suno-tiny"))) as server:
            body = {"model": "bark", "input": "hello from the page", "voice": "announcer", "seed": 11,
                    "response_format": "pcm"}
            expected = np.frombuffer(httpx.post(f"{server.url}/v1/audio/speech", json=body, timeout=300).content,
                                     "<i2").size
            assert expected > 0
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda d: len(Select(d.find_element(By.ID, "voice")).options) > 1)  # the voices loaded
            browser.find_element(By.ID, "text").send_keys(body["input"])
            Select(browser.find_element(By.ID, "voice")).select_by_value("announcer")
            browser.find_element(By.ID, "seed").send_keys("11")
            assert browser.find_element(By.ID, "samples").text == "0"
            browser.find_element(By.ID, "speak").click()
            wait.until(lambda d: d.find_element(By.ID, "state").text in ("done", "failed"))
            assert browser.find_element(By.ID, "error").text == ""
            assert browser.find_element(By.ID, "state").text == "done"
            assert int(browser.find_element(By.ID, "samples").text) == expected  # every sample arrived
            assert tts.stats()["completed"] == 2 and tts.stats()["failed"] == 0
    finally:
        tts.close()
