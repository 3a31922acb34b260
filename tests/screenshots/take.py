"""Screenshots of the page and the atlas for the README, from a running service.

    python -m modellens_jax.serve_http --bundle=runs/default/bundle &
    python tests/screenshots/take.py --url=http://127.0.0.1:8000 [--out=tests/screenshots]

Needs selenium and Debian's chromium + chromium-driver (the [test] extra's browser setup).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    """Fills the form with one query, ranks, screenshots; opens the atlas, finds and clicks a
    model, screenshots."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument(
        "--desc", default="Fine-grained classification of 200 bird species from photographs."
    )
    ap.add_argument("--task", default="Image Classification")
    ap.add_argument("--metric", default="top1")
    ap.add_argument("--model", default="eva02_large_patch14_448.mim_m38m_ft_in22k_in1k")
    args = ap.parse_args()
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,980",
              "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    wait = WebDriverWait(drv, 600)
    out = Path(args.out)
    try:
        drv.get(args.url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        drv.find_element(By.ID, "dataset_desc").send_keys(args.desc)
        drv.find_element(By.ID, "task").send_keys(args.task)
        drv.find_element(By.ID, "metric").send_keys(args.metric)
        drv.find_element(By.ID, "rank").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tbody tr"))
        drv.save_screenshot(str(out / "page.png"))
        drv.find_element(By.ID, "nav-atlas").click()
        wait.until(lambda d: d.find_element(By.ID, "atlas").get_attribute("data-ready"))
        drv.find_element(By.ID, "atlas-search").send_keys(args.model, Keys.ENTER)
        canvas = drv.find_element(By.CSS_SELECTOR, "canvas[data-space='learned']")
        pos = drv.execute_script(
            "return ModelLensAtlas.current.screenPosition('learned', arguments[0])", args.model
        )
        size = canvas.size
        ActionChains(drv).move_to_element_with_offset(
            canvas, int(pos["x"] - size["width"] / 2), int(pos["y"] - size["height"] / 2)
        ).click().perform()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#atlas-topk li"))
        # zoom back out, keeping the selection, for an overview
        drv.execute_script("const a = ModelLensAtlas.current; a.found = -1; "
                           "a.panels.forEach((p) => p.reset()); a.redraw();")  # fmt: skip
        time.sleep(0.5)
        drv.save_screenshot(str(out / "atlas.png"))
        print(json.dumps({"page": str(out / "page.png"), "atlas": str(out / "atlas.png")}))
    finally:
        drv.quit()


if __name__ == "__main__":
    main()
