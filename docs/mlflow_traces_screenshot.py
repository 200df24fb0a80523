"""Take docs/mlflow-traces.png: the demo's agent trace in MLflow's trace view.

Run after ``asynctrack demo --mlflow URL`` against a local ``mlflow server``::

    python docs/mlflow_traces_screenshot.py http://127.0.0.1:5000 docs/mlflow-traces.png

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) through selenium, at
1400x900; it waits until the trace's span tree is drawn.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from mlflow import MlflowClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

EXPERIMENT = "langchain-sagemaker-tracker"  # the demo's


def main(url: str, out: str) -> None:
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise SystemExit(f"no experiment {EXPERIMENT!r} at {url}: run `asynctrack demo --mlflow {url}` first")
    traces = client.search_traces(locations=[experiment.experiment_id], order_by=["timestamp_ms DESC"])
    if not traces:
        raise SystemExit(f"no trace in {EXPERIMENT!r}")
    shown = max(traces, key=lambda t: len(t.data.spans))  # the sequential chain's tree
    first_span = shown.data.spans[-1].name
    page = (
        f"{url}/#/experiments/{experiment.experiment_id}/traces"
        f"?selectedEvaluationId={shown.info.trace_id}&selectedTraceId={shown.info.trace_id}"
    )
    profile = tempfile.mkdtemp(prefix="mlflow-shot-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never download a driver
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.set_page_load_timeout(60)
        driver.get(page)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if driver.find_elements(By.XPATH, f"//*[contains(text(), '{first_span}')]"):
                break
            time.sleep(0.5)
        # Out of the way: the assistant's panel and its tour; the trace panel full width.
        for label in ("Close guidance", "Close", "Full screen"):
            for button in driver.find_elements(By.CSS_SELECTOR, f"button[aria-label='{label}']"):
                driver.execute_script("arguments[0].click();", button)
                time.sleep(0.5)
        time.sleep(2)  # let the span details settle
        driver.save_screenshot(out)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{out}: {page}")


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"), sys.argv[2] if len(sys.argv) > 2 else "docs/mlflow-traces.png")
