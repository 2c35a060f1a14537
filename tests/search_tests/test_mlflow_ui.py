"""The real MLflow UI, in a real headless Chromium: the study's runs and the litesweep.pareto tag are shown.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them). Screenshots are
saved to ``test-artifacts/`` (or ``$LITESWEEP_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from litesweep.search.app import run
from tests.conftest import compose_quick
from tests.servers import start_mlflow, stop

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("LITESWEEP_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="Debian chromium and chromium-driver are not installed (make test installs them)",
)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory):
    """A small finished study and ``mlflow ui`` serving its store on 127.0.0.1."""
    out = tmp_path_factory.mktemp("ui")
    result = run(compose_quick(out, "study.n_trials=3", "study.presets=false"))
    server, url = start_mlflow("ui", "--backend-store-uri", result.tracking_uri)
    yield url, result
    stop(server)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, "chromium and chromium-driver are missing (make browser installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait_for_text(driver, text: str, seconds: float = 60) -> str:
    from selenium.webdriver.common.by import By

    deadline = time.time() + seconds
    body = ""
    while time.time() < deadline:
        body = driver.find_element(By.TAG_NAME, "body").text
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not shown; page text: {body[:1500]!r}")


def test_the_experiment_page_shows_the_study_runs(ui, browser) -> None:
    from selenium.webdriver.common.by import By

    url, result = ui
    browser.get(f"{url}/#/experiments/{result.experiment_id}/runs")
    _wait_for_text(browser, f"study-{result.study_name}")
    # Trial runs are nested under the study's parent run: expand it as a user would.
    for button in browser.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"):
        button.click()
    body = _wait_for_text(browser, "trial-0002")
    for name in ("trial-0000", "trial-0001", f"study-{result.study_name}"):
        assert name in body
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "mlflow_experiment.png"))


def test_a_front_run_page_shows_the_pareto_tag(ui, browser) -> None:
    from mlflow.tracking import MlflowClient

    url, result = ui
    runs = MlflowClient(result.tracking_uri).search_runs(
        [result.experiment_id], filter_string="tags.`litesweep.pareto` = 'true'")
    assert runs, "no run is tagged on the front"
    browser.get(f"{url}/#/experiments/{result.experiment_id}/runs/{runs[0].info.run_id}")
    body = _wait_for_text(browser, "litesweep.pareto")
    assert "litesweep.trial_number" in body
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "mlflow_front_run.png"))
