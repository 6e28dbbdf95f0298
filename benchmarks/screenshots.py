"""The pictures in the docs, made from the current version: the playground of ``charlstm serve``
writing with a trained model (docs/serve_page.png), and the pages a user reads first in the built
site on a narrow screen (a phone's 390 px), to look at.

    python benchmarks/screenshots.py RUN [--site site/] [--out shots/]

RUN: a trained run (the docs' picture used one trained 120 s on tinyshakespeare.txt with the
defaults). Needs Debian's chromium and chromium-driver, selenium (the test extra), and for the
narrow pages a built site (``mkdocs build -d site``). The playground picture is written over
docs/serve_page.png; the narrow pages go to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
FIRST_PAGES = ("index.html", "readme/index.html", "training/index.html", "generating/index.html")


def browser(width: int, height: int, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        sys.exit("chromium and chromedriver are not installed (Debian: apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))


@contextlib.contextmanager
def serving(run: str):
    """``charlstm serve RUN`` on a free loopback port, in this process; its URL."""
    import uvicorn

    from charlstm.serving.app import Server
    from charlstm.serving.models import load_served

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(Server([load_served(run, "cpu")]).app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/health").status_code == 200:
                break
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def playground(run: str, out: Path, profile: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with serving(run) as url:
        page = browser(1100, 700, profile)
        try:
            page.get(url + "/")
            wait = WebDriverWait(page, 30)
            wait.until(lambda b: b.find_element(By.ID, "model").text.strip() != "")
            prompt = page.find_element(By.ID, "prompt")
            prompt.clear()
            prompt.send_keys("ROMEO:\n")
            Select(page.find_element(By.ID, "colour")).select_by_value("probability")
            page.find_element(By.ID, "length").clear()
            page.find_element(By.ID, "length").send_keys("600")
            page.find_element(By.ID, "generate").click()
            wait.until(lambda b: b.find_element(By.ID, "status").text.startswith(("done", "stopped", "length")) or
                       len(b.find_element(By.ID, "output").text) >= 600)
            time.sleep(0.5)
            page.save_screenshot(str(out))
        finally:
            page.quit()
    print(f"wrote {out}", file=sys.stderr)


def narrow(site: Path, out: Path, profile: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    page = browser(390, 844, profile)
    try:
        for name in FIRST_PAGES:
            path = site / name
            if not path.exists():
                print(f"{path}: not in the site", file=sys.stderr)
                continue
            page.get(path.as_uri())
            time.sleep(0.3)
            wide = page.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
            shot = out / (name.replace("/", "_").removesuffix("_index.html").removesuffix(".html") + "_390px.png")
            page.save_screenshot(str(shot))
            print(f"{shot}: {'scrolls sideways' if wide else 'fits the width'}")
    finally:
        page.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run directory")
    parser.add_argument("--site", type=Path, help="a built site (mkdocs build -d DIR) to look at on a narrow screen")
    parser.add_argument("--out", type=Path, default=Path("shots"), help="where the narrow pages go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        playground(args.run, ROOT / "docs" / "serve_page.png", Path(tmp) / "one")
        if args.site is not None:
            narrow(args.site, args.out, Path(tmp) / "two")


if __name__ == "__main__":
    main()
