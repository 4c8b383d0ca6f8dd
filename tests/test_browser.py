"""report.html from a real small run, opened in headless Chromium (playwright).

The page must load without console errors, every image must decode, and the Pareto front table
must be there. A full-page screenshot is kept in ``.ci/artifacts/report.png`` for CI to keep.
Uses Debian's ``chromium`` (``apt-get install chromium``), not a browser playwright downloads.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from archsearch.report import write_report

from ._tiny import tiny_run

ARTIFACTS = Path(__file__).resolve().parents[1] / ".ci" / "artifacts"

#: Per image: alt text, whether it finished loading, its decoded width and its shown width
#: (0 is fine only inside a closed <details>).
_IMAGES_JS = """els => els.map(e => [e.alt, e.complete, e.naturalWidth,
                                     e.closest('details:not([open])') ? -1 : e.clientWidth])"""

#: Per table after the "Pareto front" heading (until the next h2): data rows and shown height.
_FRONT_TABLES_JS = """() => {
  const head = [...document.querySelectorAll('h2')]
    .find(h => h.textContent.trim().startsWith('Pareto front'));
  if (!head) return null;
  const found = [];
  for (let el = head.nextElementSibling; el && el.tagName !== 'H2'; el = el.nextElementSibling) {
    const tables = el.tagName === 'TABLE' ? [el] : [...el.querySelectorAll('table')];
    for (const t of tables) {
      found.push([[...t.querySelectorAll('tr')].filter(r => r.querySelector('td')).length,
                  t.offsetHeight]);
    }
  }
  return found;
}"""


def _chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _chromium()
    return write_report(tiny_run(tmp_path_factory.mktemp("browser") / "run", trials=6))


def test_report_renders_in_chromium(report: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium())
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url[:80]}"))
            page.goto(report["html"].as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", _IMAGES_JS)
            front = page.evaluate(_FRONT_TABLES_JS)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()

    assert not errors, f"console errors: {errors}"
    assert len(images) >= len(report["plots"]) > 0
    broken = [alt for alt, complete, natural, _ in images if not complete or natural == 0]
    assert not broken, f"images that did not load: {broken}"
    hidden = [alt for alt, _, _, shown in images if shown == 0]
    assert not hidden, f"images not shown: {hidden}"
    assert front is not None, "no 'Pareto front' heading"
    rows = len(pd.read_csv(report["pareto_csv"]))
    assert any(n >= rows and height > 0 for n, height in front), (
        f"no shown table of the {rows} front trials after the heading: {front}"
    )
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
