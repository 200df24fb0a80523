"""The HTML report (``_read/_report.py``), read as a person would: in headless Chromium.

Chromium and its driver are Debian's packages (``apt-get install chromium
chromium-driver``). Selenium drives them with the executable paths given, so nothing is
downloaded. Without them the browser tests are skipped, saying why; ``.ci/run`` installs
them and sets ``ASYNCTRACK_REQUIRE_BROWSER=1``, which makes their absence a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

import asynctrack
from asynctrack import AsyncTracker
from asynctrack._cli import main
from asynctrack._read._report import embed_json, render_report, report_data

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HOSTILE = (
    "</script><script>window.__pwned = 1</script><!-- <script>window.__pwned = 2</script> "
    "<img src=x onerror='window.__pwned = 3'> \u2028 \u2029 & &amp; </SCRIPT >"
)


def test_embedded_json_cannot_end_its_script_element() -> None:
    value = {"text": HOSTILE, HOSTILE: [HOSTILE]}
    text = embed_json(value)
    assert json.loads(text) == value
    lowered = text.lower()
    for forbidden in ("</script", "<!--", "<script", "<img", "\u2028", "\u2029", "&"):
        assert forbidden not in lowered


def test_the_page_references_nothing_outside_itself() -> None:
    html = render_report(report_data([], title="empty"))
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(link|img|iframe|object|embed)\b", html, re.IGNORECASE)
    assert not re.search(r"<script[^>]*\bsrc=", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html and "@font-face" not in html


# --------------------------------------------------------------------------------------
# In the browser
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        reason = f"{' and '.join(missing)} not installed: apt-get install -y chromium chromium-driver"
        if os.environ.get("ASYNCTRACK_REQUIRE_BROWSER") == "1":  # .ci/run: the browser test must run
            pytest.fail(reason)
        pytest.skip(f"{reason} (.ci/run installs them and requires this test)")
    profile = tempfile.mkdtemp(prefix="asynctrack-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1500,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a driver
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(browser: WebDriver, path: Path) -> None:
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(path.as_uri())


def _console_errors(browser: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def _rows(browser: WebDriver) -> list[Any]:
    return browser.find_elements(By.CSS_SELECTOR, "#tree .tree-row")


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("report") / "logs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", io.StringIO())
        assert main(["demo", "--destination", str(root)]) == 0
        output = root.parent / "report.html"
        assert (
            main(["report", str(root), "--experiment", "langchain-sagemaker-tracker", "-o", str(output)]) == 0
        )
    runs = sorted(path.name.removeprefix("run=") for path in root.glob("experiment=*/run=*"))
    return output, runs


def test_a_person_sees_the_runs_the_tree_and_a_nodes_inputs(
    browser: WebDriver, demo_report: tuple[Path, list[str]], tmp_path: Path
) -> None:
    output, runs = demo_report
    _open(browser, output)
    assert browser.title == "asynctrack · langchain-sagemaker-tracker"
    listed = [item.get_attribute("data-run") for item in browser.find_elements(By.CSS_SELECTOR, ".run-item")]
    assert sorted(listed) == runs
    assert all(item.is_displayed() for item in browser.find_elements(By.CSS_SELECTOR, ".run-item"))

    agent = next(
        item for item in browser.find_elements(By.CSS_SELECTOR, ".run-item") if "scenario-3" in item.text
    )
    agent.click()
    assert "17" in browser.find_element(By.CSS_SELECTOR, ".cards").text
    names = [row.get_attribute("data-name") for row in _rows(browser)]
    assert names[0] == "AgentExecutor"
    assert "Calculator" in names
    # The Calculator tool starts collapsed: its model call is hidden until expanded.
    before = len(names)
    calculator = next(row for row in _rows(browser) if row.get_attribute("data-name") == "Calculator")
    toggle = calculator.find_element(By.CSS_SELECTOR, ".toggle")
    assert toggle.text == "▸"
    toggle.click()
    assert len(_rows(browser)) == before + 1
    expanded = next(row for row in _rows(browser) if row.get_attribute("data-name") == "Calculator")
    assert expanded.find_element(By.CSS_SELECTOR, ".toggle").text == "▾"

    # Selecting the nested model call shows its full prompt and its output.
    index = [row.get_attribute("data-name") for row in _rows(browser)].index("Calculator") + 1
    _rows(browser)[index].click()
    detail = browser.find_element(By.ID, "detail")
    headings = [h.text for h in detail.find_elements(By.TAG_NAME, "h4")]
    assert headings[:2] == ["INPUTS", "OUTPUTS"]
    inputs, outputs = (pre.text for pre in detail.find_elements(By.CSS_SELECTOR, "pre.value")[:2])
    assert "Translate a math problem into a expression" in inputs
    assert "Question: 116^1.51" in inputs  # the whole prompt, not a cut
    assert outputs.startswith("```text\n116**1.51\n```")  # the generated text, readable
    raw = detail.find_element(By.TAG_NAME, "details")
    assert not raw.find_element(By.TAG_NAME, "pre").is_displayed()
    raw.find_element(By.TAG_NAME, "summary").click()
    assert '"prompts"' not in raw.text and "Translate a math problem" in raw.text
    assert "gpt-3.5-turbo-instruct" in detail.text
    assert "84 in / 4 out" in detail.text

    # The waterfall: one bar per visible span, inside its track.
    bars = browser.find_elements(By.CSS_SELECTOR, "#tree .bar")
    assert len(bars) == len(_rows(browser))
    assert all(bar.size["width"] >= 1 for bar in bars)
    tokens = browser.find_element(By.ID, "tokens").text
    assert "gpt-3.5-turbo-instruct" in tokens and "705" in tokens and "83" in tokens

    # The agent's actions sit between its steps, in time order.
    kinds_and_names = [
        (row.get_attribute("data-kind"), row.get_attribute("data-name")) for row in _rows(browser)
    ]
    actions = [name for kind, name in kinds_and_names if kind == "agent_action"]
    assert actions == ["Search(oldest person alive)", "Calculator(116^1.51)"]
    search_action = kinds_and_names.index(("agent_action", actions[0]))
    assert kinds_and_names[search_action + 1] == ("tool", "Search")
    _rows(browser)[search_action].click()
    assert "oldest person alive" in browser.find_element(By.CSS_SELECTOR, "#detail pre.value").text

    assert _console_errors(browser) == []
    # Nothing was fetched: no resource besides the document itself.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000


def test_hostile_event_text_stays_text(browser: WebDriver, tmp_path: Path) -> None:
    root = tmp_path / "logs"

    def fail(value: Any) -> Any:
        raise RuntimeError(HOSTILE)

    with AsyncTracker(root, experiment_name=HOSTILE, run_name=HOSTILE) as tracker:
        RunnableLambda(lambda value: value).invoke(
            {"q": HOSTILE}, config={"callbacks": [tracker], "run_name": HOSTILE}
        )
        with pytest.raises(RuntimeError):
            RunnableLambda(fail).invoke(HOSTILE, config={"callbacks": [tracker]})
        tracker.on_text(HOSTILE, run_id=uuid.uuid4())
    events = asynctrack.read_events(root)
    output = tmp_path / "hostile.html"
    output.write_text(render_report(report_data(events, title=HOSTILE)), encoding="utf-8")
    _open(browser, output)

    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 2  # the data and the page's own
    assert browser.execute_script("return document.getElementById('title').textContent") == HOSTILE
    assert browser.find_element(By.CSS_SELECTOR, ".run-item").get_attribute("data-run") == HOSTILE
    rows = _rows(browser)
    assert rows[0].get_attribute("data-name") == HOSTILE
    rows[0].click()
    first_pre = browser.find_element(By.CSS_SELECTOR, "#detail pre.value")
    assert json.loads(browser.execute_script("return arguments[0].textContent", first_pre)) == {"q": HOSTILE}
    errors = browser.find_element(By.ID, "errors").text
    assert "RuntimeError" in errors and "<script>window.__pwned = 1</script>" in errors
    browser.find_element(By.CSS_SELECTOR, "#errors li").click()  # an error leads to its node
    assert "ERROR" in [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#detail h4")]
    assert browser.find_element(By.CSS_SELECTOR, "#tree .tree-row.selected.error").is_displayed()
    assert browser.execute_script("return window.__pwned === undefined")
    assert _console_errors(browser) == []
