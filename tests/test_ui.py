"""The MLflow UI, for real: ``mlflow ui`` on a store filled by a two-run sweep, read in headless
Chromium. Needs Debian's chromium and chromium-driver (``.ci/run`` installs them); skipped
where they are missing. Screenshots go to ``$GENRE_EXP_TEST_ARTIFACTS`` (default:
``outputs/test-artifacts``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import free_port, run_cli, serving, tiny_overrides, tracking_uri, write_kaggle_csv

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
        reason="needs Debian's chromium and chromium-driver",
    ),
]
SCREENSHOTS = Path(
    os.environ.get(
        "GENRE_EXP_TEST_ARTIFACTS",
        Path(__file__).resolve().parents[1] / "outputs" / "test-artifacts",
    )
)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A store filled by a real two-job sweep, and ``mlflow ui`` serving it on loopback."""
    root = tmp_path_factory.mktemp("ui")
    write_kaggle_csv(root)
    sweep = run_cli(
        [
            "-m",
            "model=lstm,lstm_dropout",
            "mlflow.log_model=false",
            *tiny_overrides(root, root / "train.csv", root / "test.csv"),
            "training.epochs=1",
        ]
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        # Without it the UI starts ~15 processes and ~3 GB; with it 2 and ~0.5 GB.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    base = f"http://127.0.0.1:{port}"
    with serving(
        [
            shutil.which("mlflow", path=env["PATH"]),
            "ui",
            "--backend-store-uri",
            tracking_uri(root),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        f"{base}/health",
        env,
        timeout=90,
    ):
        yield root, base


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-size=1600,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for_text(driver, *texts: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return body if all(t in body for t in texts) else False

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(shown)


def screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / name))


def sweep_runs(root: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri(root))
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("sweep") != "parent"]
    (parent,) = [r for r in runs if r not in children]
    return experiment.experiment_id, parent, children


def test_runs_page_groups_both_runs_under_the_sweep(ui, browser):
    from selenium.webdriver.common.by import By

    root, base = ui
    experiment_id, parent, children = sweep_runs(root)
    assert len(children) == 2
    browser.get(f"{base}/#/experiments/{experiment_id}/runs")
    wait_for_text(browser, parent.info.run_name)
    # The children are nested under the sweep's parent run: open the group.
    expanders = browser.find_elements(By.CSS_SELECTOR, "[role=row] button.du-bois-light-btn-link")
    assert expanders, "no expandable parent row"
    expanders[0].click()
    wait_for_text(browser, *(c.info.run_name for c in children))
    screenshot(browser, "mlflow-ui-runs.png")


def test_run_pages_show_test_macro_f1_and_the_confusion_matrix(ui, browser):
    from selenium.webdriver.common.by import By

    root, base = ui
    experiment_id, _, children = sweep_runs(root)
    for k, run in enumerate(children):
        page = f"{base}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
        browser.get(page)
        body = wait_for_text(browser, run.info.run_name, "test_macro_f1")
        value = repr(run.data.metrics["test_macro_f1"])
        assert value in body, f"test_macro_f1 = {value} not shown"
        screenshot(browser, f"mlflow-ui-run-{k}.png")

        browser.get(f"{page}/artifacts/plots/confusion_matrix.png")
        wait_for_text(browser, "confusion_matrix.png")
        images = browser.find_elements(By.TAG_NAME, "img")
        assert any(
            browser.execute_script("return arguments[0].naturalWidth", i) > 500 for i in images
        ), "the confusion-matrix image did not render"
        screenshot(browser, f"mlflow-ui-confusion-matrix-{k}.png")
