"""The web page in a real headless Chromium (Debian's), against a real demo server.

It types a prompt, watches the progress bar and the preview change with every step (a
MutationObserver in the page records each change, so none is missed between two polls), gets
the final image with its seed, cancels a long run, shows a validation error next to its
field, and starts from an uploaded image (strength, mask) and from the last result.
Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from playwright.sync_api import Browser, Page, expect, sync_playwright

from engine.job import GenerationMode
from scheduler.job import JobState
from server.background import ServerThread
from tests.holds import new_hold

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# A closed network: nothing in the browser may try to reach the outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

# Records every value the progress bar and the preview take, from before the click on.
RECORD_CHANGES = """() => {
  const seen = { progress: [], previews: [] };
  const bar = document.getElementById("progress");
  const preview = document.getElementById("preview");
  new MutationObserver(() => seen.progress.push(bar.value)).observe(bar, {
    attributes: true, attributeFilter: ["value"],
  });
  new MutationObserver(() => {
    if (preview.src) seen.previews.push(preview.src);
  }).observe(preview, { attributes: true, attributeFilter: ["src"] });
  window.__seen = seen;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `make system-deps` installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, web_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(web_url + "/")
    expect(opened.locator("#models")).to_contain_text("model demo", timeout=TIMEOUT_MS)
    yield opened
    context.close()
    assert errors == [], f"the page threw: {errors}"


def fill(page: Page, prompt: str, width: int, height: int, steps: int, seed: str = "") -> None:
    page.fill("#prompt", prompt)
    page.fill("#width", str(width))
    page.fill("#height", str(height))
    page.fill("#steps", str(steps))
    page.fill("#seed", seed)


def test_generate_shows_every_step_the_preview_and_the_final_image(
    page: Page, tmp_path: Path
) -> None:
    fill(page, "a lighthouse at dusk", 64, 64, steps=8, seed="7")
    page.evaluate(RECORD_CHANGES)

    page.click("#generate")

    expect(page.locator("#status")).to_have_text("Done.", timeout=TIMEOUT_MS)
    seen = page.evaluate("window.__seen")
    steps_seen = [int(value) for value in seen["progress"] if value > 0]
    assert steps_seen == list(range(1, 9)), seen["progress"]
    assert len(set(seen["previews"])) == 8, "one new preview per step"
    expect(page.locator("#progress-text")).to_contain_text("step 8 / 8")
    expect(page.locator("#result-caption")).to_contain_text("seed 7 \u00b7 64\u00d764")
    size = page.evaluate(
        "() => { const i = document.getElementById('result');"
        " return [i.complete, i.naturalWidth, i.naturalHeight]; }"
    )
    assert size == [True, 64, 64]
    expect(page.locator("#generate")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    page.screenshot(path=str(tmp_path / "page-done.png"), full_page=True)


def test_cancel_stops_the_job_mid_run(page: Page, web_server: ServerThread, tmp_path: Path) -> None:
    # Held after step 1 (tests.holds), the job is still running when Cancel is clicked, however
    # fast the machine is.
    fill(page, new_hold("page").prompt, 64, 64, steps=4)

    page.click("#generate")
    page.wait_for_function("document.getElementById('progress').value >= 1", timeout=TIMEOUT_MS)
    page.click("#cancel")

    expect(page.locator("#status")).to_have_text(re.compile(r"^Cancelled at step \d+\.$"))
    job_id = page.locator("#job").inner_text().removeprefix("job ")
    job = web_server.wait_job_finished(job_id, timeout=30)
    assert job.state == JobState.CANCELLED
    stopped_at = int(page.evaluate("document.getElementById('progress').value"))
    assert stopped_at == 1
    expect(page.locator("#generate")).to_be_enabled()
    page.screenshot(path=str(tmp_path / "page-cancelled.png"), full_page=True)


def test_invalid_size_is_shown_next_to_its_field(page: Page) -> None:
    fill(page, "a lighthouse", 65, 64, steps=2)

    page.click("#generate")

    note = page.locator('.field-error[data-for="width"]')
    expect(note).to_contain_text("16", timeout=TIMEOUT_MS)
    expect(page.locator("#width")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#status")).to_have_text("Please fix the highlighted fields.")


def test_an_uploaded_image_a_strength_and_a_mask_then_the_last_result(
    page: Page, web_server: ServerThread, tmp_path: Path
) -> None:
    source, mask = tmp_path / "in.png", tmp_path / "mask.png"
    pixels = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    PILImage.fromarray(pixels).save(source)
    grey = np.zeros((64, 96), dtype=np.uint8)
    grey[:, 48:] = 255
    PILImage.fromarray(grey).save(mask)
    # Width and height say 128: with an image the page leaves the size to it (96x64).
    fill(page, "a harbour at night", 128, 128, steps=8, seed="3")
    page.set_input_files("#init_image", str(source))
    page.fill("#strength", "0.5")
    expect(page.locator("#strength-value")).to_have_text("0.5")
    page.set_input_files("#mask", str(mask))

    page.click("#generate")

    expect(page.locator("#status")).to_have_text("Done.", timeout=TIMEOUT_MS)
    expect(page.locator("#progress-text")).to_contain_text("step 4 / 4")  # steps x strength
    expect(page.locator("#result-caption")).to_contain_text("seed 3 \u00b7 96\u00d764")
    first_id = page.locator("#job").inner_text().removeprefix("job ")
    first = web_server.wait_job_finished(first_id, timeout=30)
    assert first.spec.mode is GenerationMode.INPAINTING and first.spec.strength == 0.5
    assert first.spec.init_image is not None
    assert first.spec.init_image.sha256 == hashlib.sha256(pixels.tobytes()).hexdigest()
    page.screenshot(path=str(tmp_path / "page-inpainted.png"), full_page=True)

    # Then the last result, by reference (no upload), without the mask: image-to-image.
    page.set_input_files("#mask", [])
    page.check("#reuse")
    page.click("#generate")

    expect(page.locator("#status")).to_have_text("Done.", timeout=TIMEOUT_MS)
    second_id = page.locator("#job").inner_text().removeprefix("job ")
    assert second_id != first_id
    second = web_server.wait_job_finished(second_id, timeout=30)
    assert second.spec.mode is GenerationMode.IMAGE_TO_IMAGE and second.spec.init_image
    assert first.result is not None
    shown = PILImage.open(io.BytesIO(first.result.images[0].data)).convert("RGB")
    assert second.spec.init_image.sha256 == hashlib.sha256(shown.tobytes()).hexdigest()


def test_a_bad_init_image_is_shown_next_to_its_input(page: Page, tmp_path: Path) -> None:
    odd = tmp_path / "odd.png"
    PILImage.fromarray(np.zeros((64, 72, 3), dtype=np.uint8)).save(odd)  # 72: not a multiple of 16
    fill(page, "a harbour", 64, 64, steps=2)
    page.set_input_files("#init_image", str(odd))

    page.click("#generate")

    note = page.locator('.field-error[data-for="init_image"]')
    expect(note).to_contain_text("multiple of 16", timeout=TIMEOUT_MS)
    expect(page.locator("#init_image")).to_have_attribute("aria-invalid", "true")
