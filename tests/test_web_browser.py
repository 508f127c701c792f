"""The page of `mtfap serve` in a real browser: Debian's headless Chromium driven by
Playwright's Python API (never `playwright install`, which downloads a browser).

It uploads a real photo, sees each face boxed with its 40 attribute bars and an activation
map, runs the paper's query "old man wearing glasses" over an index of FairFace photos and
sees the thumbnails. Screenshots go to the test's folder, and also to $MTFAP_SCREENSHOTS when
set (the docs' figures: MTFAP_SCREENSHOTS=docs/figures pytest tests/test_web_browser.py).
Every face in them is FairFace's (CC BY 4.0, which allows publishing them with the credit);
CelebA's and LFW's licences do not allow copying their faces into the repository.
"""

import os
import shutil
import socket
import threading
import time
from importlib import resources
from pathlib import Path

import pytest
from index_factory import FROZEN, QUERY, fairface_collection

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
PHOTOS = 60

pytestmark = [pytest.mark.data, pytest.mark.slow]

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium, or "
                "bash scripts/install_chromium.sh)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the "
                               "library only; the test uses Debian's Chromium)")


@pytest.fixture(scope="module")
def server(fairface_dir, tmp_path_factory):
    """`mtfap serve` over sixty FairFace photos (twenty of men over fifty) indexed as any
    collection (detection, identity descriptors), on a free port of 127.0.0.1."""
    import uvicorn

    from mtfap.applications.index import index_collection
    from mtfap.applications.web import create_app

    base = tmp_path_factory.mktemp("browser")
    fairface_collection(fairface_dir, base / "photos", old_men=20, others=PHOTOS - 20)
    index_collection(base / "photos", base / "photos.db", FROZEN, workers=1)
    app = create_app(base / "photos.db", model=FROZEN)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def group_photo() -> Path:
    """A real photo of three faces that ships with the package (FairFace, CC BY 4.0)."""
    path = Path(str(resources.files("mtfap").joinpath(
        "resources/demo/fairface-18-3-20-group.jpg")))
    if not path.is_file():
        pytest.skip(f"the demo photo {path.name} is not in the package")
    return path


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=path)
    if os.environ.get("MTFAP_SCREENSHOTS"):
        folder = Path(os.environ["MTFAP_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return path


IMAGES_LOADED = """([selector, count]) => {
    const images = [...document.querySelectorAll(selector)].slice(0, count);
    return images.length === count && images.every((i) => i.complete && i.naturalWidth > 0);
}"""


def test_an_uploaded_photo_shows_each_face_with_its_bars_and_a_map(server, page, tmp_path):
    page.goto(server)
    sync_api.expect(page.locator("#status")).to_contain_text(f"faces in {PHOTOS} photos")
    page.set_input_files("#file", str(group_photo()))
    page.wait_for_selector(".face .bar")
    faces = page.locator(".face")
    assert faces.count() >= 2 and page.locator(".facebox").count() == faces.count()
    first = faces.first
    bars = first.locator(".bar")
    assert bars.count() == 40
    assert first.locator(".bar.on").count() >= 1  # attributes decided present are marked
    assert 0 <= float(bars.first.locator(".value").inner_text()) <= 1
    first.locator('.bar[data-attribute="Smiling"]').click()
    page.wait_for_function(IMAGES_LOADED, arg=[".face .map img", 1])
    sync_api.expect(first.locator(".map")).to_contain_text("Smiling")
    assert page.locator("#photo-error").inner_text() == ""
    assert screenshot(page, tmp_path, "web_predict.png").stat().st_size > 10_000


def test_the_papers_query_shows_the_matching_faces_as_thumbnails(server, page, tmp_path):
    if page.url.rstrip("/") != server:
        page.goto(server)
    page.select_option("#limit", "20")
    page.fill("#query", QUERY)
    page.click("#search-form button[type=submit]")
    page.wait_for_function(IMAGES_LOADED, arg=["#grid img", 20])
    sync_api.expect(page.locator("#search-info")).to_contain_text("~Young & Male & Eyeglasses")
    assert page.locator("#grid figure").count() == 20
    assert screenshot(page, tmp_path, "web_search.png").stat().st_size > 10_000

    page.fill("#query", "old man with glases")
    page.click("#search-form button[type=submit]")
    sync_api.expect(page.locator("#search-error")).to_contain_text("did you mean 'glasses'")
