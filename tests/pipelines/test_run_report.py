"""The run report page: written by `kcnn train`, every section present, every picture a PNG that loads, and
rendered in headless Chromium without console errors."""

from __future__ import annotations

import base64
import html.parser
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from kcnn.cli import main
from pipelines import config as C
from pipelines.run_report import REPORT_NAME, SECTIONS
from pipelines.train import train

TINY = {"data": {"source": "shapes", "image_size": 32, "channels": 3, "batch_size": 32},
        "model": {"name": "lenet5", "head_kwargs": {"dropout": 0.0}},
        "optimizer": {"name": "sgd", "learning_rate": 0.05},
        "train": {"epochs": 2, "steps_per_epoch": 4}}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("report") / "run")
    train(C.from_dict({k: dict(v) for k, v in TINY.items()}), path, verbose=False)
    return path


class Page(html.parser.HTMLParser):
    """Sections (id -> heading), images (src, alt) per section, figures, and every external reference."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.figures, self.external = {}, [], 0, []
        self._section, self._in_h2 = None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
            self.sections[self._section] = ""
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "img":
            self.images.append((self._section, attrs.get("src", ""), attrs.get("alt")))
        elif tag == "figure":
            self.figures += 1
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2 and self._section:
            self.sections[self._section] += data


@pytest.mark.slow
def test_train_writes_a_self_contained_report_with_every_section(run_dir):
    from PIL import Image

    with open(os.path.join(run_dir, REPORT_NAME), encoding="utf-8") as handle:
        page = Page()
        page.feed(handle.read())
    assert page.sections == dict(SECTIONS)
    assert page.external == []  # nothing to fetch: it opens offline
    sections_with_images = {section for section, _, _ in page.images}
    assert {"curves", "confusion", "wrong", "filters"} <= sections_with_images
    for section, source, alt in page.images:
        assert source.startswith("data:image/png;base64,") and alt, section
        picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        picture.load()
        assert picture.format == "PNG" and min(picture.size) > 50
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        accuracy = json.load(handle)["test_accuracy"]
    wrong = round((1 - accuracy) * 120)  # shapes' test split holds 120 images
    assert page.figures == min(8, wrong)


@pytest.mark.slow
def test_kcnn_report_rewrites_the_page_and_names_a_missing_run(run_dir, tmp_path, capsys):
    os.remove(os.path.join(run_dir, REPORT_NAME))
    assert main(["report", run_dir, "--wrong", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {os.path.join(run_dir, REPORT_NAME)}"
    with open(os.path.join(run_dir, REPORT_NAME), encoding="utf-8") as handle:
        page = Page()
        page.feed(handle.read())
    assert 0 < page.figures <= 3
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"kcnn report: error: {tmp_path} is not a finished kcnn run (missing model.keras, class_names.json, "
        "preprocessing.json); train one with `kcnn train CONFIG.yaml` first")


PROBE = """<script>
window.__errors = [];
window.addEventListener("error",
  e => window.__errors.push("error: " + (e.message || (e.target && e.target.src))), true);
const original = console.error;
console.error = (...args) => { window.__errors.push("console: " + args.join(" ")); original(...args); };
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({images: images.length, broken: broken, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def find_chromium():
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    from PIL import Image

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium not found on PATH (looked for " + ", ".join(CHROMIUM_NAMES) + "); install Debian's "
                    "package: apt-get install -y chromium")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    report = os.path.join(run_dir, REPORT_NAME)
    shot = tmp_path / "report.png"
    done = subprocess.run(flags + ["--window-size=1200,3000", f"--screenshot={shot}", f"file://{report}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    screenshot = np.asarray(Image.open(shot).convert("RGB"), dtype="float32")
    assert screenshot.shape == (3000, 1200, 3)
    assert screenshot.std() > 10  # something was drawn, not a blank page
    # The same page with a probe that records errors and checks, after load, that every image decoded.
    with open(report, encoding="utf-8") as handle:
        probed = handle.read().replace("<head>", "<head>" + PROBE, 1)
    copy = tmp_path / "probed.html"
    copy.write_text(probed, encoding="utf-8")
    done = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", f"file://{copy}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    marker = done.stdout.split('<pre id="probe">', 1)
    assert len(marker) == 2, "the probe did not run: " + done.stdout[-500:]
    result = json.loads(html.unescape(marker[1].split("</pre>", 1)[0]))
    assert result["errors"] == [] and result["broken"] == []
    assert result["images"] == probed.count("<img ")


def test_sections_that_need_a_convolution_say_so_for_a_dense_model():
    import keras

    from pipelines.run_report import filters_section, unless_no_conv

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="dense_only")
    assert unless_no_conv(filters_section, model) == "<p>model &#x27;dense_only&#x27; has no convolution layer.</p>"
