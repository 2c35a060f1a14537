"""The real MLflow UI, in a real headless Chromium: the experiment opens on the study's runs, its Models tab lists
the trials' models with their metrics, and the litesweep.pareto tag is shown.

MLflow 3.17's UI picks an experiment's view (GenAI or model training) per browser, from its **GenAI / Model
training** switch (the ``workflowType`` query parameter, else the browser's stored choice, GenAI at first), not
from the experiment's ``mlflow.experimentKind`` tag, which litesweep sets all the same (earlier 3.x UIs and the
Python API read it). The address litesweep documents names the view: ``#/experiments/<id>?workflowType=machine_learning``.

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


#: The query that opens an experiment in MLflow 3.17's model-training view (see the module docstring).
TRAINING_VIEW = "?workflowType=machine_learning"


def test_the_experiment_opens_on_the_study_runs(ui, browser) -> None:
    """The experiment's own address (no tab named): its runs with their datasets, not the GenAI overview."""
    from mlflow.tracking import MlflowClient
    from selenium.webdriver.common.by import By

    url, result = ui
    tags = MlflowClient(result.tracking_uri).get_experiment(result.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    browser.get(f"{url}/#/experiments/{result.experiment_id}{TRAINING_VIEW}")
    body = _wait_for_text(browser, f"study-{result.study_name}")
    assert "digits-validation" in body, "the Dataset column shows what the runs were scored on"
    # Trial runs are nested under the study's parent run: expand it as a user would.
    for button in browser.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"):
        button.click()
    body = _wait_for_text(browser, "trial-0002")
    for name in ("trial-0000", "trial-0001", f"study-{result.study_name}"):
        assert name in body
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "mlflow_experiment.png"))


def test_the_models_tab_lists_the_trials_models_with_their_accuracy(ui, browser) -> None:
    url, result = ui
    browser.set_window_size(2600, 1000)  # the metric columns come after the model's attributes
    try:
        browser.get(f"{url}/#/experiments/{result.experiment_id}/models{TRAINING_VIEW}")
        body = _wait_for_text(browser, "accuracy_drop")
        for name in ("trial-0000", "trial-0001", "trial-0002", "Ready", "accuracy"):
            assert name in body, name
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "mlflow_models.png"))
    finally:
        browser.set_window_size(1600, 1000)


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
