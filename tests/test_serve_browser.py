"""`searchr3 serve` as a user meets it: a real uvicorn on 127.0.0.1, the page in headless Chromium (type a query,
see ranked results, switch mode; a screenshot), and a promotion while requests run (none fails).

The screenshot goes to a temporary folder; ``SEARCHR3_SCREENSHOT=reports/serve_page.png`` refreshes the committed one
(a test run leaves the checkout as it found it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT_ENV = "SEARCHR3_SCREENSHOT"
# flags that work without a GPU, a sandbox or any network access (the browser downloads nothing)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def server(serve_workspace, port):
    """`searchr3 serve --port N` started in the workspace; yields (base url, workspace, process)."""
    shutil.copy(ROOT / "params.yaml", serve_workspace / "params.yaml")
    log = open(serve_workspace / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "searchr3.cli", "serve", "--port", str(port)], cwd=serve_workspace,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"searchr3 serve exited with {proc.returncode}:\n{(serve_workspace / 'serve.log').read_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("searchr3 serve did not answer /health within 120 s")
    try:
        yield url, serve_workspace, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_page_in_headless_chromium(server, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (.ci/run does)")
    from playwright.sync_api import sync_playwright

    url, workspace, _ = server
    record = json.loads((workspace / "production" / "record.json").read_text())
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 900})
        try:
            page = browser.new_page()
            page.goto(url + "/")
            assert page.locator("#release-id").inner_text() == record["release"]
            assert page.locator("#eval-table tbody tr").count() == 2  # the release's evaluation table
            page.fill("#q", "parse a date from text")
            page.select_option("#mode", "hybrid")
            page.click("#go")
            page.wait_for_selector("#results li", timeout=30_000)
            items = page.locator("#results li")
            assert items.count() == 10
            first = items.nth(0)
            assert first.locator(".rank").inner_text() == "1"
            assert float(first.locator(".score").inner_text()) > 0
            assert "dense #" in first.locator(".ranks").inner_text()
            assert "hybrid" in page.locator("#status").inner_text() and record["release"] in page.locator("#status").inner_text()
            screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "serve_page.png")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            page.select_option("#mode", "bm25")  # the mode switch: BM25 finds the one document with these words
            page.fill("#q", "photovoltaic sunlight")
            page.click("#go")
            page.wait_for_function("document.querySelector('#status').textContent.includes('bm25')", timeout=30_000)
            assert page.locator("#results li").count() == 1
            assert page.locator("#results li .docid").inner_text() == "solar"

            page.fill("#q", "x" * 1001)  # the page caps what the API refuses: the box, and k through form validation
            assert len(page.locator("#q").input_value()) == 1000
            page.fill("#k", "500")
            assert page.locator("#k").evaluate("input => input.validity.rangeOverflow")
            page.fill("#k", "10")
            page.fill("#q", "photovoltaic sunlight")
            page.check("#reasoning")  # reasoning with mode bm25: the API's one-line refusal is shown
            page.click("#go")
            page.wait_for_function("document.querySelector('#status').className === 'error'", timeout=30_000)
            assert page.locator("#status").inner_text() == \
                "error: reasoning needs the model: use mode=dense or mode=hybrid"
            assert page.locator("#results li").count() == 0
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


def test_promotion_under_load_fails_no_request(server, tiny_model_dir_b, promote_tiny, promotion_under_load):
    url, workspace, _ = server
    first = json.loads((workspace / "production" / "record.json").read_text())["release"]
    clients, opened = threading.local(), []  # one HTTP connection per load thread

    def request(mode: str):
        if not hasattr(clients, "client"):
            clients.client = httpx.Client(base_url=url, timeout=60)
            opened.append(clients.client)
        try:
            r = clients.client.get("/search", params={"q": "load json from a file", "mode": mode, "k": 5})
        except httpx.HTTPError as err:
            return False, repr(err)
        return (True, r.json()["release"]) if r.status_code == 200 else (False, f"{r.status_code} {r.text}")

    seen, failures, second = promotion_under_load(
        request, lambda: promote_tiny(workspace, tiny_model_dir_b, hour=2)["release"],
        ("dense", "hybrid", "dense", "hybrid"), warmup_s=1.0, timeout_s=60)
    for c in opened:
        c.close()
    assert failures == []
    assert seen[0] == first and seen[-1] == second and len(seen) > 20
    assert httpx.get(url + "/release").json()["release"] == second
    assert "swapped release " + first + " -> " + second in (workspace / "serve.log").read_text()
