"""Driving `glotok demo` in headless Chromium (Debian's `chromium` + `chromium-driver`, through selenium with the
system driver: Selenium Manager never runs, nothing is downloaded). Used by tests/test_space.py and
benchmarks/bench_space.py."""

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(log: Path, *args: str, env: dict | None = None, timeout: float = 120):
    """Run `glotok demo --port <free port> *args` (offline, one torch thread unless `env` says otherwise) and yield
    `(url, process)` once its page answers; the server is stopped (SIGTERM, then SIGKILL after 10 s) on exit."""
    port = free_port()
    offline = {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    env = {**os.environ, **offline, "PYTHONUNBUFFERED": "1", **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "-m", "glotok_hf.cli", "demo", "--port", str(port), *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"glotok demo exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"glotok demo served nothing within {timeout} s:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1400):
    """A headless Chromium driven through /usr/bin/chromedriver, logging the network requests it makes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 60, what: str = "the page"):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    waiting = WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException])  # re-rendered
    return waiting.until(condition, f"{what} did not show up within {timeout} s")


def element(driver, css: str, timeout: float = 30):
    from selenium.webdriver.common.by import By

    return wait(driver, lambda d: (d.find_elements(By.CSS_SELECTOR, css) or [None])[0], timeout, css)


def open_app(driver, url: str) -> None:
    driver.get(url)
    element(driver, "#generate")


def set_classes(driver, labels: list[str]) -> None:
    """Empty the class picker, then type each label and press Enter, as a person picks classes."""
    from selenium.webdriver.common.keys import Keys

    for clear in element(driver, "#classes").find_elements("css selector", ".remove-all"):
        driver.execute_script("arguments[0].click()", clear)
    wait(driver, lambda d: not d.find_elements("css selector", "#classes .token"), 10, "an empty class picker")
    field = element(driver, "#classes input")
    for label in labels:
        field.click()
        field.send_keys(label, Keys.ENTER)
    field.send_keys(Keys.ESCAPE)


def set_number(driver, elem_id: str, value) -> None:
    from selenium.webdriver.common.keys import Keys

    field = element(driver, f"#{elem_id} input")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.TAB)


def click(driver, css: str) -> None:
    element(driver, css).click()


def click_text(driver, text: str) -> None:
    """Click the innermost element that shows exactly `text` (an example, a tab, ...)."""
    from selenium.webdriver.common.by import By

    xpath = f"//*[normalize-space(text())='{text}']"
    wait(driver, lambda d: d.find_elements(By.XPATH, xpath), 10, text)[0].click()


def open_tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    wait(driver, lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == name], 10)[
        0
    ].click()


def wait_text(driver, pattern: str, timeout: float = 30) -> re.Match:
    """The first match of `pattern` in the page's visible text, waiting for it."""
    return wait(driver, lambda d: re.search(pattern, d.find_element("tag name", "body").text), timeout, pattern)


def gallery_images(driver, count: int, timeout: float = 120) -> list[Image.Image]:
    """The `count` images of the Generate tab's gallery (waiting for them), fetched from the server by their URL."""

    def sources(d):
        found = [img.get_attribute("src") for img in d.find_elements("css selector", "#gallery img")]
        found = list(dict.fromkeys(src for src in found if src and "/file=" in src))
        return found if len(found) == count else None

    return [fetch_image(url) for url in wait(driver, sources, timeout, f"{count} gallery images")]


def fetch_image(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=30) as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB")


def upload(driver, elem_id: str, path: Path) -> None:
    """Put `path` in the file component `elem_id`, removing the file it holds first."""
    for clear in driver.find_elements("css selector", f"#{elem_id} button[aria-label=Clear]"):
        driver.execute_script("arguments[0].click()", clear)  # an error toast may lie over it
    element(driver, f"#{elem_id} input[type=file]").send_keys(str(path))


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (Chromium's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def screenshot(driver, path: Path) -> None:
    """A screenshot of the whole app (the window grown to the page's height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(driver.get_window_size()["width"], min(height + 40, 4000))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
