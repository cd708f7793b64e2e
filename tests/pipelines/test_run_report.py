"""The run report page: written by `kcnn train`, every section present, every picture a captioned PNG that loads, the
run's dates, versions, starting weights and config shown, figures labelled, the per-layer analysis collapsed, and
rendered in headless Chromium without console errors."""

from __future__ import annotations

import base64
import csv
import html.parser
import io
import json
import os
import platform
import re
import shutil
import subprocess
from datetime import datetime, timezone

import numpy as np
import pytest

from kcnn.cli import main
from pipelines import config as C
from pipelines.run_report import (NOT_RECORDED, REPORT_NAME, SECTIONS, Run, readable_label,
                                  run_section, summary_rows)
from pipelines.train import train

# Three classes (no top-5 figure), and fine-tuning's two stages: the backbone frozen for epoch 1, unfrozen for epoch 2.
TINY = {"data": {"source": "shapes", "image_size": 32, "channels": 3, "batch_size": 32},
        "model": {"name": "lenet5", "head_kwargs": {"dropout": 0.0}, "freeze": "backbone"},
        "optimizer": {"name": "sgd", "learning_rate": 0.05},
        "train": {"epochs": 2, "steps_per_epoch": 4, "unfreeze_at_epoch": 1, "unfreeze_learning_rate": 0.02}}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("report") / "run")
    train(C.from_dict({k: dict(v) for k, v in TINY.items()}), path, verbose=False)
    return path


class Page(html.parser.HTMLParser):
    """Sections (id -> heading) and their text, images (section, src, alt), figures (section, caption, images),
    tables (section, rows of cell texts), collapsed parts (id -> open, summary, text, tags inside), every
    external reference."""

    def __init__(self):
        super().__init__()
        self.sections, self.text, self.images, self.figures, self.tables = {}, {}, [], [], []
        self.details, self.external = {}, []
        self._section, self._in_h2, self._figure, self._caption, self._details, self._cell = (None,) * 6

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs.get("id")
            self.sections[self._section], self.text[self._section] = "", ""
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "img":
            self.images.append((self._section, attrs.get("src", ""), attrs.get("alt")))
            if self._figure is not None:
                self._figure["images"] += 1
        elif tag == "figure":
            self._figure = {"section": self._section, "caption": "", "images": 0}
        elif tag == "figcaption":
            self._caption = True
        elif tag == "details":
            self._details = attrs.get("id")
            self.details[self._details] = {"open": "open" in attrs, "summary": "", "text": "", "tags": [],
                                           "section": self._section}
        elif tag == "table":
            self.tables.append((self._section, []))
        elif tag == "tr":
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        if self._details is not None and tag != "details":
            self.details[self._details]["tags"].append(tag)
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False
        elif tag == "figure":
            self.figures.append(self._figure)
            self._figure = None
        elif tag == "figcaption":
            self._caption = None
        elif tag == "details":
            self._details = None
        elif tag in ("td", "th"):
            self.tables[-1][1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._in_h2 and self._section:
            self.sections[self._section] += data
        if self._section:
            self.text[self._section] += data
        if self._caption and self._figure is not None:
            self._figure["caption"] += data
        if self._cell is not None:
            self._cell += data
        if self._details is not None:
            part = self.details[self._details]
            part["summary" if part["tags"][-1:] == ["summary"] else "text"] += data

    def rows(self, section) -> dict:
        """The first column -> the second, over the section's tables."""
        return {row[0]: row[1] for key, rows in self.tables if key == section for row in rows[1:]}


def read_page(run_dir) -> Page:
    with open(os.path.join(run_dir, REPORT_NAME), encoding="utf-8") as handle:
        page = Page()
        page.feed(handle.read())
    return page


@pytest.mark.slow
def test_train_writes_a_self_contained_report_with_every_section(run_dir):
    from PIL import Image

    page = read_page(run_dir)
    assert page.sections == dict(SECTIONS)
    assert page.external == []  # nothing to fetch: it opens offline
    sections_with_images = {section for section, _, _ in page.images}
    assert {"curves", "confusion", "wrong", "filters"} <= sections_with_images
    for section, source, alt in page.images:
        assert source.startswith("data:image/png;base64,") and alt, section
        picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        picture.load()
        assert picture.format == "PNG" and min(picture.size) > 50
    # Every picture is a figure with a caption saying what it shows.
    assert len(page.figures) == len(page.images) and all(f["images"] == 1 and f["caption"] for f in page.figures)
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        accuracy = json.load(handle)["test_accuracy"]
    check_grad_cam_examples(run_dir, 8)


def check_grad_cam_examples(run_dir: str, shown: int) -> None:
    """The Grad-CAM section shows the wrong test images first, the most confident first, then the right ones it
    was least sure of, the least sure first, ``shown`` in all."""
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        accuracy = json.load(handle)["test_accuracy"]
    wrong = min(shown, round((1 - accuracy) * 120))  # shapes' test split holds 120 images
    captions = [f["caption"] for f in read_page(run_dir).figures if f["section"] == "wrong"]
    assert len(captions) == shown
    assert all(re.fullmatch(r"test #\d+: true \w+, predicted \w+ \(\d\.\d\d\)", c) for c in captions[:wrong])
    assert all(re.fullmatch(r"test #\d+: \w+, right \(\d\.\d\d\)", c) for c in captions[wrong:]), captions
    confidence = [float(re.search(r"\((\d\.\d\d)\)$", caption).group(1)) for caption in captions]
    assert confidence[:wrong] == sorted(confidence[:wrong], reverse=True)
    assert confidence[wrong:] == sorted(confidence[wrong:])


@pytest.mark.slow
def test_the_report_shows_the_run_its_config_and_readable_figures(run_dir):
    import keras
    import tensorflow as tf
    import yaml

    import kcnn

    page = read_page(run_dir)
    run = page.rows("run")
    started, finished = (datetime.strptime(run[f"{when} (UTC)"], "%Y-%m-%d %H:%M:%S UTC")
                         for when in ("started", "finished"))
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    assert started <= finished <= now and (now - started).total_seconds() < 3600  # written moments ago
    assert (run["kcnn version"], run["Keras version"], run["TensorFlow version"], run["Python version"]) == (
        kcnn.__version__, keras.__version__, tf.__version__, platform.python_version())
    assert run["starting weights (model.weights)"] == "none: random initialisation (train.seed 0)"
    assert run["fine-tuning"] == ("the backbone frozen for epoch 1 (model.freeze: backbone), unfrozen from epoch 2 "
                                  "(train.unfreeze_at_epoch: 1) at peak learning rate 0.02; batch-norm layers stay "
                                  "frozen")
    assert run["pruning (train.prune_*)"] == "off"
    # The resolved config.yaml, collapsed under a visible one-line summary; the headline figures beside it.
    config = page.details["config-yaml"]
    with open(os.path.join(run_dir, "config.yaml")) as handle:
        assert config["text"] == handle.read()
    assert config["section"] == "config" and not config["open"] and "config.yaml as resolved" in config["summary"]
    assert yaml.safe_load(config["text"])["train"]["unfreeze_learning_rate"] == 0.02
    assert page.rows("config")["peak learning rate"] == "0.05"
    # Every summary figure under a readable label (no raw keys) with its unit; top-5 absent with three classes.
    summary = page.rows("summary")
    assert all("_" not in label for label in summary), list(summary)
    assert float(summary["wall-clock time of the last training session (s)"]) > 0
    assert float(summary["training throughput (images/s, median epoch)"]) > 0
    assert summary["classes"] == "3" and summary["test accuracy"]
    assert not any("top-5" in text.lower() or "top5" in text.lower() for text in page.text.values())
    # The learning rate per epoch beside the curves, as history.csv logs it: after epoch 1 stage two's peak, 0.02;
    # after epoch 2 the end of its cosine, 0.
    curves = [f["caption"] for f in page.figures if f["section"] == "curves"]
    assert curves == ["Loss (left) and accuracy (right) per epoch, on the training and validation splits",
                      "Learning rate per epoch (the rate at the end of each epoch: the next step's)"]
    with open(os.path.join(run_dir, "history.csv")) as handle:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(handle)]
    assert rates == pytest.approx([0.02, 0.0], abs=1e-9)
    # The analysis totals stay visible; the per-layer table is collapsed under a one-line summary.
    analysis = page.details["analysis-layers"]
    layers = next(rows for key, rows in page.tables if key == "analysis")
    assert analysis["section"] == "analysis" and not analysis["open"] and "table" in analysis["tags"]
    assert analysis["summary"].startswith(f"Per-layer table: {len(layers) - 1} layers")
    assert "parameters" in page.text["analysis"].split("Per-layer table")[0]


def test_summary_figures_are_labelled_and_top5_needs_more_than_five_classes():
    metrics = {"test_accuracy": 0.5, "test_top5_accuracy": 0.9, "wall_seconds_this_session": 12.34,
               "train_images_per_second": 1234.5, "test_ap_small": 0.25, "test_ar100": 0.5, "data_seconds": 2.0,
               "test_per_class_ap": {"a": 1.0}}

    def labels(classes):
        run = Run(".", None, None, [], metrics, [str(i) for i in range(classes)], {})
        return dict(summary_rows(run, [("test accuracy", "0.5000")]))

    assert labels(3) == {"test accuracy": "0.5000", "wall-clock time of the last training session (s)": "12.3",
                         "training throughput (images/s, median epoch)": "1,234", "test AP small": "0.2500",
                         "test AR100": "0.5000", "data time (s)": "2.0"}
    assert labels(5).keys() == labels(3).keys()  # the top five of five classes is every class
    assert labels(6)["test top-5 accuracy"] == "0.9000"
    assert readable_label("val_top5_accuracy") == "validation top-5 accuracy"
    no_classes = Run(".", None, None, [], {"num_classes": 0, "val_psnr": 10.567, "scale": 3}, [], {})
    assert summary_rows(no_classes, []) == [("best validation PSNR (dB)", "10.57"), ("scale", "3")]


def test_the_run_section_names_resumed_sessions_changed_versions_and_an_unrecorded_run():
    def rows(info, **config):
        run = Run(".", C.from_dict({k: {**TINY[k], **config.get(k, {})} for k in TINY}), None, [], {}, [], {},
                  info=info)
        page = Page()
        page.feed(run_section(run))
        return page.rows(None)

    versions = {"kcnn": "0.1.0", "keras": "3.15.1", "tensorflow": "2.21.0", "python": "3.11.7"}
    info = {"sessions": [{"started_utc": "2026-03-01T10:00:00+00:00", "start_epoch": 0,
                          "versions": {**versions, "tensorflow": "2.20.0"}},
                         {"started_utc": "2026-03-02T09:30:00+00:00", "start_epoch": 3, "versions": versions}],
            "finished_utc": "2026-03-02T11:15:42+00:00"}
    resumed = rows(info, model={"weights": "imagenet", "freeze": "none"},
                   train={"prune_table": "squeezenet_table1", "unfreeze_at_epoch": None})
    assert resumed["started (UTC)"] == "2026-03-01 10:00:00 UTC"
    assert resumed["finished (UTC)"] == "2026-03-02 11:15:42 UTC"
    assert resumed["training sessions"] == "2: resumed after epoch 3"
    assert resumed["TensorFlow version"] == "2.21.0" and resumed["versions of earlier sessions"] == "TensorFlow 2.20.0"
    assert resumed["starting weights (model.weights)"] == "imagenet: the pretrained ImageNet checkpoint of lenet5 " \
                                                           "(kcnn.weights)"
    assert resumed["fine-tuning"] == "none: every layer trains from the first epoch"
    assert resumed["pruning (train.prune_*)"] == ("to the per-layer densities of table squeezenet_table1 "
                                                  "(kcnn.compress.TABLES), once by weight magnitude before the first "
                                                  "step, then held")
    unrecorded = rows({})
    assert unrecorded["started (UTC)"] == unrecorded["Keras version"] == NOT_RECORDED


@pytest.mark.slow
def test_kcnn_report_rewrites_the_page_and_names_a_missing_run(run_dir, tmp_path, capsys):
    os.remove(os.path.join(run_dir, REPORT_NAME))
    assert main(["report", run_dir, "--wrong", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {os.path.join(run_dir, REPORT_NAME)}"
    check_grad_cam_examples(run_dir, 3)
    # More than the tiny run got wrong: every wrong test image, then the right ones it was least sure of.
    assert main(["report", run_dir, "--wrong", "110"]) == 0
    capsys.readouterr()
    check_grad_cam_examples(run_dir, 110)
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
  const height = e => e.getBoundingClientRect().height;
  // A closed <details> takes the height of its summary alone: its content is not on screen.
  const details = Array.from(document.querySelectorAll("details")).map(d => ({
    id: d.id, open: d.open, summary: height(d.querySelector("summary")) > 0,
    content: height(d) - height(d.querySelector("summary")) > 1}));
  const curves = Array.from(document.querySelectorAll("#curves img")).map(
    i => ({alt: i.alt, width: i.naturalWidth, top: Math.round(i.getBoundingClientRect().top)}));
  const text = id => document.getElementById(id).innerText;
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({images: images.length, broken: broken, errors: window.__errors,
    details: details, curves: curves, run: text("run"), config: text("config"),
    top5: /top-?5/i.test(document.body.innerText)});
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
    # As rendered: the config and the per-layer table closed, only their one-line summaries on screen; the run's
    # dates and versions shown; the learning-rate curve decoded beside the training curves; no top-5 anywhere.
    assert result["details"] == [{"id": "config-yaml", "open": False, "summary": True, "content": False},
                                 {"id": "analysis-layers", "open": False, "summary": True, "content": False}]
    assert "started (UTC)" in result["run"] and "TensorFlow version" in result["run"] and "Keras" in result["run"]
    assert "config.yaml as resolved" in result["config"] and "unfreeze_learning_rate" not in result["config"]
    curves, rate = result["curves"]
    assert rate["alt"].startswith("Learning rate per epoch") and rate["width"] > 0 and rate["top"] == curves["top"]
    assert result["top5"] is False


def test_sections_that_need_a_convolution_say_so_for_a_dense_model():
    import keras

    from pipelines.run_report import filters_section, unless_no_conv

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="dense_only")
    assert unless_no_conv(filters_section, model) == "<p>model &#x27;dense_only&#x27; has no convolution layer.</p>"
