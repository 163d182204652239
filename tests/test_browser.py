"""The course's widgets in a real browser: JupyterLab started here, headless Chromium driven by Selenium. For
notebooks 02 and 05: run all cells, move the k_max slider of the last panel, check that its plot was redrawn
and that no cell shows an error; a screenshot of each lands in results/browser/.

Copies of the notebooks are run (next to a link to data/), so JupyterLab's autosave never touches the stored
outputs. Skipped, with the reason, where Chromium or its driver is missing (`make setup` installs them with
apt where it can)."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
NOTEBOOKS = ("02_kseq.ipynb", "05_results.ipynb")
RUN_TIMEOUT_S = 600

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="no Chromium and chromedriver here: on Debian `apt-get install chromium chromium-driver` (make setup "
           "tries it), then the browser test runs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of the notebooks; yields the URL of a notebook given its name."""
    pytest.importorskip("selenium", reason="selenium is not installed: `pip install -e '.[test]'` installs it")
    work = tmp_path_factory.mktemp("lab")
    (work / "notebooks").mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, work / "notebooks" / name)
    (work / "data").symlink_to(ROOT / "data")  # notebooks read committed results through ../data
    port, token = _free_port(), "spectr-browser-test"
    # the server's own workspace and settings: no tab of an earlier session is restored next to ours
    env = dict(os.environ, SPECTR_FAST="1", JUPYTER_PLATFORM_DIRS="1", JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(work / "settings"))
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             f"--ServerApp.root_dir={work / 'notebooks'}", f"--IdentityProvider.token={token}",
                             "--ServerApp.allow_root=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
                             "jupyterlab.NeverCheckForUpdate"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(work / 'lab.log').read_text()[-2000:]}")
                time.sleep(1)
        else:
            pytest.fail("JupyterLab did not answer within 2 minutes")
        yield lambda name: f"{base}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _run_all(driver, wait) -> None:
    from selenium.webdriver.common.by import By

    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
    wait.until(lambda d: "Idle" in d.find_element(By.CSS_SELECTOR, "body").text or
               d.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"))
    driver.find_element(By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel') and text()='Run']").click()
    driver.find_element(By.XPATH, "//div[contains(@class, 'lm-Menu-itemLabel') and text()='Run All Cells']").click()


ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show


def _prompts(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{ACTIVE} .jp-CodeCell .jp-InputArea-prompt")]


def _wait_all_run(driver, timeout_s: float) -> None:
    """Until every code cell on show has run (numbered prompts, none pending "[*]"); fails with the prompts."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        p = _prompts(driver)
        if p and all(x.strip("[]: ").isdigit() for x in p):
            return
        if _errors(driver):
            pytest.fail(f"a cell failed: {_errors(driver)[0][:2000]}")
        time.sleep(3)
    pytest.fail(f"cells still not run after {timeout_s:.0f} s: prompts {_prompts(driver)}")


def _errors(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    texts = [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{ACTIVE} [data-mime-type='application/vnd.jupyter.stderr']")]
    texts += [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{ACTIVE} .jp-Cell .widget-output, {ACTIVE} .jp-OutputArea-output")
              if "Error displaying widget" in e.text]
    return [t for t in texts if "Traceback" in t or "Error" in t.split("\n")[0]]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_its_k_slider_redraws(lab, browser, name):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(lab(name))
    _run_all(browser, WebDriverWait(browser, 180))
    # every code cell has run: numbered prompts, none pending ("[*]") or empty
    _wait_all_run(browser, RUN_TIMEOUT_S)
    assert not _errors(browser), _errors(browser)
    panel = browser.find_elements(By.CSS_SELECTOR, f"{ACTIVE} .widget-interact")[-1]
    slider = next(s for s in panel.find_elements(By.CSS_SELECTOR, ".widget-slider, .widget-hslider")
                  if s.find_element(By.CSS_SELECTOR, ".widget-label").text.strip() == "k_max")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", panel)

    def image() -> str:
        imgs = panel.find_elements(By.CSS_SELECTOR, ".widget-output img, .jp-OutputArea-output img")
        return imgs[-1].get_attribute("src") if imgs else ""

    WebDriverWait(browser, 120).until(lambda d: image())
    before, value = image(), slider.find_element(By.CSS_SELECTOR, ".widget-readout").text
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_LEFT)
    WebDriverWait(browser, 120).until(lambda d: slider.find_element(By.CSS_SELECTOR, ".widget-readout").text != value)
    WebDriverWait(browser, 120).until(lambda d: image() and image() != before)
    assert not _errors(browser), _errors(browser)
    out = ROOT / "results" / "browser"
    out.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(out / f"{Path(name).stem}.png"))
