"""Single-image super-resolution: ESPCN or SRCNN on the luma channel, PSNR and SSIM beside bicubic upscaling.

As in the papers (Dong et al. 2014; Shi et al. 2016) the network sees the Y channel of
YCbCr: a low-resolution Y made by bicubic downscaling goes in, the Y at ``scale`` times
the size comes out; colour (Cb, Cr) is upscaled bicubically. Training minimises the
mean squared error on random crops of the training photographs
(``pipelines.photos``); validation reports PSNR on whole photographs; the test figures
follow the super-resolution literature's protocol: PSNR and SSIM on Y in [0, 255] with
``scale`` border pixels cropped, always next to bicubic upscaling measured the same way
(``kcnn.quality``).

Exported signatures: ``serving_default`` takes uint8 ``images`` ``[batch, H, W, 3]`` and
returns ``upscaled`` uint8 ``[batch, scale*H, scale*W, 3]`` and ``upscaled_y`` float32
(the network's luma in [0, 1]); ``predict_image_bytes`` takes encoded files and returns
``upscaled_png_bytes``, each image upscaled at its own size and encoded as PNG.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os

import numpy as np
import tensorflow as tf

from pipelines.tasks.base import TASKS, Endpoint, ExportError, Task, call_signatures, sample_images

OUTPUT_IMAGES = "upscaled"
OUTPUT_Y = "upscaled_y"
# TF Serving's REST API base64-encodes a string output only when its name ends in "_bytes" (json_tensor.cc).
OUTPUT_PNG = "upscaled_png_bytes"


@dataclasses.dataclass(frozen=True)
class SuperResolutionSpec:
    """A run's DataSpec with the upscaling factor: ``image_size`` is the side of a high-resolution crop."""

    base: object
    scale: int
    patch_size: int  # the side of a high-resolution training crop (data.image_size)

    def __getattr__(self, name):  # batch_size, the split names, seed, preprocessing, ...
        return getattr(self.base, name)

    def evaluation(self, **changes) -> "SuperResolutionSpec":
        return dataclasses.replace(self, base=self.base.evaluation(**changes))


def upscale(model, images, scale: int):
    """uint8 (or float [0, 255]) RGB ``[batch, H, W, 3]`` -> ``(uint8 RGB, float Y in [0, 1])`` at ``scale`` x size."""
    from pipelines.photos import bicubic_upscale, rgb_to_ycbcr, ycbcr_to_rgb

    rgb = tf.cast(images, tf.float32) / 255.0
    ycbcr = rgb_to_ycbcr(rgb)
    luma = tf.clip_by_value(tf.cast(model(ycbcr[..., :1], training=False), tf.float32), 0.0, 1.0)
    chroma = bicubic_upscale(ycbcr[..., 1:], scale)
    out = tf.clip_by_value(ycbcr_to_rgb(tf.concat([luma, chroma], -1)), 0.0, 1.0)
    return tf.cast(tf.round(out * 255.0), tf.uint8), luma


def photo_scores(model, dataset, scale: int) -> list[dict]:
    """PSNR and SSIM on Y in [0, 255], ``scale`` border pixels cropped, of the model and of bicubic, per photograph."""
    from kcnn import quality
    from pipelines.photos import bicubic_upscale

    rows = []
    for low, high in dataset:
        predicted = np.clip(np.asarray(model(low, training=False), np.float64), 0.0, 1.0) * 255.0
        bicubic = np.clip(bicubic_upscale(low, scale).numpy().astype(np.float64), 0.0, 1.0) * 255.0
        truth = high.numpy().astype(np.float64) * 255.0
        for p, b, t in zip(predicted[..., 0], bicubic[..., 0], truth[..., 0]):
            rows.append({"psnr": quality.psnr(t, p, border=scale), "ssim": quality.ssim(t, p, border=scale),
                         "bicubic_psnr": quality.psnr(t, b, border=scale),
                         "bicubic_ssim": quality.ssim(t, b, border=scale)})
    return rows


class SuperResolution(Task):
    name = "super_resolution"
    target = "image"
    options = {"scale": 3}
    train_metric = "psnr"
    monitor = "psnr"
    served_outputs = (OUTPUT_PNG,)

    def check_model(self, model_config):
        from kcnn.superres import SUPER_RESOLUTION
        from pipelines.config import ConfigError

        builder = SUPER_RESOLUTION.entry(model_config.name).fn  # the names and the closest on a miss
        scale = self.resolve_options(model_config.task_options)["scale"]
        if isinstance(scale, bool) or scale not in (2, 3, 4):
            raise ConfigError(f"model.task_options.scale must be 2, 3 or 4 (the papers' factors), got {scale!r}")
        for key in ("head", "weights"):
            if getattr(model_config, key) is not None:
                raise ConfigError(f"model.{key} does not apply to super-resolution models; leave it unset")
        return builder

    def data_spec(self, spec, model_config):
        """The run's DataSpec with this run's scale (what ``datasets`` takes).

        Its Preprocessing says what the network sees: one channel (Y / 255), not normalised, at the
        low-resolution patch size.
        """
        from pipelines.config import ConfigError
        from pipelines.preprocess import Preprocessing

        scale = self.resolve_options(model_config.task_options)["scale"]
        if spec.source != "photos":
            raise ConfigError(f"super-resolution trains on data.source 'photos' (the photographs installed packages "
                              f"ship, pipelines/photos.py), got {spec.source!r}")
        size = spec.preprocessing.image_size
        if size % scale:
            raise ConfigError(f"data.image_size {size} (the high-resolution crop) must be a multiple of "
                              f"model.task_options.scale {scale}")
        network = Preprocessing(size // scale, 1, 1.0, (0.0,), (1.0,))
        return SuperResolutionSpec(dataclasses.replace(spec, preprocessing=network), scale, size)

    def export_metadata(self, model, options=None):
        """The upscaling factor, measured on the model itself."""
        return {"scale": int(model(np.zeros((1, 8, 8, 1), np.float32)).shape[1]) // 8}

    def build_model(self, model_config, num_classes, input_shape):
        from kcnn.superres import SUPER_RESOLUTION

        scale = self.resolve_options(model_config.task_options)["scale"]
        return SUPER_RESOLUTION.get(model_config.name)(scale=scale, **model_config.builder_kwargs())

    def datasets(self, spec, split):
        from pipelines.photos import sr_dataset

        from pipelines.data import DatasetInfo

        training = split == spec.train_split and spec.recipe is not None
        dataset, photos = sr_dataset(split, scale=spec.scale, patch_size=spec.patch_size, batch_size=spec.batch_size,
                                     seed=spec.seed or 0, training=training)
        return dataset, DatasetInfo("photos", split, (), photos.count, spec.preprocessing, training=training)

    def loss(self, targets, outputs, options, config):
        """Mean squared error per image, the papers' objective."""
        return tf.reduce_mean(tf.square(tf.cast(outputs, tf.float32) - targets), [1, 2, 3])

    def train_score(self, targets, outputs, options=None):
        return tf.reduce_sum(_psnr(targets, outputs))

    def evaluation_sums(self, targets, outputs, num_classes, options=None):
        return {"loss": tf.reduce_sum(self.loss(targets, outputs, {}, None)),
                "psnr": tf.reduce_sum(_psnr(targets, outputs)),
                "count": tf.cast(tf.shape(outputs)[0], tf.float32)}

    def evaluation_result(self, sums, keep_predictions, num_classes=None):
        count = max(float(sums.get("count", 0.0)), 1.0)
        return {"loss": float(sums.get("loss", 0.0)) / count, "psnr": float(sums.get("psnr", 0.0)) / count,
                "count": int(sums.get("count", 0))}

    def finish(self, run, model, history, test, train_info, spec):
        dataset, _ = self.datasets(spec.evaluation(cache=False), spec.test_split)
        metrics = _test_figures(model, dataset, spec.scale, photo_names(spec.test_split))
        metrics["val_psnr"] = max((h["val_psnr"] for h in history), default=float("nan"))
        if run is not None:
            _save_crops(model, dataset, spec.scale, run.plot("super_resolution_crops"))
        return metrics

    def summary(self, metrics):
        return (f"test PSNR {metrics['test_psnr']:.2f} dB (bicubic {metrics['bicubic_psnr']:.2f}), SSIM "
                f"{metrics['test_ssim']:.4f} (bicubic {metrics['bicubic_ssim']:.4f}) at x{metrics['scale']}")

    def evaluate_run(self, run_dir, *, tta="none", split=None, flip=None):
        from pipelines.evaluate import read_config
        from pipelines.data import DataSpec
        from pipelines.run_dir import RunDir, atomic_write

        if tta != "none":
            raise ValueError(f"test-time augmentation ({tta!r}) is for classification runs; evaluate a "
                             "super-resolution run with tta='none'")
        run = RunDir(run_dir)
        config, model = read_config(run_dir), run.load_model()
        spec = self.data_spec(DataSpec.from_config(config.data), config.model)  # fixed pre-processing: Y / 255
        split = split or spec.test_split
        dataset, _ = self.datasets(spec.evaluation(cache=False), split)
        result = {"task": self.name, "split": split, "tta": "none",
                  **_test_figures(model, dataset, spec.scale, photo_names(split))}
        atomic_write(run.evaluation("none"), json.dumps(result, indent=2))
        return result

    def format_evaluation(self, result):
        lines = [f"{result['split']} split, {len(result['photos'])} photographs at x{result['scale']}: "
                 f"PSNR {result['test_psnr']:.2f} dB (bicubic {result['bicubic_psnr']:.2f}), SSIM "
                 f"{result['test_ssim']:.4f} (bicubic {result['bicubic_ssim']:.4f})",
                 f"{'photograph':>16} {'PSNR':>7} {'bicubic':>7} {'SSIM':>7} {'bicubic':>7}"]
        lines += [f"{row['photo'][:16]:>16} {row['psnr']:7.2f} {row['bicubic_psnr']:7.2f} {row['ssim']:7.4f} "
                  f"{row['bicubic_ssim']:7.4f}" for row in result["photos"]]
        return "\n".join(lines)

    # ------------------------------------------------------------------------ export
    def check_export(self, model, class_names):
        if tuple(model.input_shape[-1:]) != (1,) or tuple(model.output_shape[-1:]) != (1,):
            raise ValueError(f"a super-resolution export needs a luma model (1 channel in and out), got "
                             f"{model.input_shape} -> {model.output_shape}")

    def serving_endpoints(self, model, preprocessing, metadata, max_pixels):
        from pipelines.preprocess import decode_image

        scale = metadata["scale"]

        def predict_images(images):
            pixels, luma = upscale(model, images, scale)
            return {OUTPUT_IMAGES: pixels, OUTPUT_Y: luma}

        def predict_image_bytes(image_bytes):
            def one(encoded):
                return tf.io.encode_png(upscale(model, decode_image(encoded, max_pixels=max_pixels)[tf.newaxis],
                                                scale)[0][0])

            return {OUTPUT_PNG: tf.map_fn(one, image_bytes, fn_output_signature=tf.string)}

        return {"images": Endpoint(predict_images, tf.TensorSpec([None, None, None, 3], "uint8")),
                "image_bytes": Endpoint(predict_image_bytes, tf.TensorSpec([None], tf.string))}

    def verify_export(self, model, loaded, preprocessing, metadata):
        images = sample_images(preprocessing, 2, seed=1, size=17)
        expected = upscale(model, tf.constant(images), metadata["scale"])[0].numpy().astype(np.int16)
        served = call_signatures(loaded, images)
        got = {"images": served["images"][OUTPUT_IMAGES].numpy(),
               "image_bytes": np.stack([tf.io.decode_png(p).numpy() for p in served["image_bytes"][OUTPUT_PNG]])}
        difference = 0
        for name, value in got.items():
            if value.shape != expected.shape:
                raise ExportError(f"the {name} signature returned {value.shape}, expected {expected.shape}; the "
                                  "export was not put in place")
            difference = max(difference, int(np.abs(value.astype(np.int16) - expected).max()))
        if difference > 1:
            raise ExportError(f"the exported model differs from the Keras model by {difference} grey levels; the "
                              "export was not put in place")
        return float(difference)

    def write_predictions(self, outputs, images, out_dir):
        from kcnn.files import atomic_write

        lines = []
        for path, encoded in zip(images, np.asarray(outputs[OUTPUT_PNG]).reshape(-1)):
            target = os.path.join(out_dir, os.path.splitext(os.path.basename(str(path)))[0] + "_upscaled.png")
            atomic_write(target, bytes(encoded))
            height, width = tf.io.decode_png(bytes(encoded)).shape[:2]
            lines.append(f"{path} -> {target} ({width}x{height})")
        return lines

    # ------------------------------------------------------------------------ report
    def report_sections(self, run, *, examples: int = 8):
        from pipelines.run_report import figure, table

        metrics = run.metrics
        rows = [(row["photo"], f"{row['psnr']:.2f}", f"{row['bicubic_psnr']:.2f}",
                 f"{row['psnr'] - row['bicubic_psnr']:+.2f}", f"{row['ssim']:.4f}", f"{row['bicubic_ssim']:.4f}")
                for row in metrics.get("photos", [])]
        rows.append(("mean", f"{metrics['test_psnr']:.2f}", f"{metrics['bicubic_psnr']:.2f}",
                     f"{metrics['test_psnr'] - metrics['bicubic_psnr']:+.2f}", f"{metrics['test_ssim']:.4f}",
                     f"{metrics['bicubic_ssim']:.4f}"))
        crops = os.path.join(run.path, "plots", "super_resolution_crops.png")
        picture = "<p>No crops in this run.</p>"
        if os.path.exists(crops):
            with open(crops, "rb") as handle:
                picture = figure(handle.read(), "bicubic, model and original crops")
        return [
            ("summary", None, [("scale", f"x{metrics['scale']}"), ("test PSNR (dB)", f"{metrics['test_psnr']:.2f}"),
                               ("bicubic PSNR (dB)", f"{metrics['bicubic_psnr']:.2f}")]),
            ("quality", "PSNR and SSIM against bicubic (Y channel, border cropped by the scale)",
             table(("photograph", "PSNR", "bicubic", "gain", "SSIM", "bicubic SSIM"), rows)),
            ("crops", "Crops: bicubic, model, original",
             f"<p>{html.escape('Each row: one test photograph; left to right bicubic, the model, the original.')}"
             f"</p>{picture}"),
        ]


def _psnr(targets, outputs):
    """PSNR in dB of each image of a batch, pixels in [0, 1] (the training and validation figure)."""
    error = tf.reduce_mean(tf.square(tf.clip_by_value(tf.cast(outputs, tf.float32), 0.0, 1.0) - targets), [1, 2, 3])
    return 10.0 * tf.math.log(1.0 / tf.maximum(error, 1e-10)) / tf.math.log(10.0)


def photo_names(split: str) -> list:
    from pipelines.photos import photo_names as names

    return list(names(split))


def _test_figures(model, dataset, scale: int, names: list) -> dict:
    rows = photo_scores(model, dataset, scale)
    for row, name in zip(rows, names):
        row["photo"] = name
    mean = {key: float(np.mean([row[key] for row in rows])) for key in ("psnr", "ssim", "bicubic_psnr",
                                                                         "bicubic_ssim")}
    return {"scale": scale, "test_psnr": mean["psnr"], "test_ssim": mean["ssim"],
            "bicubic_psnr": mean["bicubic_psnr"], "bicubic_ssim": mean["bicubic_ssim"], "photos": rows}


CROP = 96  # pixels of the high-resolution crop shown per photograph


def _save_crops(model, dataset, scale: int, path: str) -> str:
    """One row per test photograph: the centre crop upscaled bicubically, by the model, and the original (Y)."""
    from kcnn.insight import draw
    from pipelines.photos import bicubic_upscale
    from pipelines.run_dir import staged_path

    rows = []
    for low, high in dataset:
        predicted = np.clip(np.asarray(model(low, training=False))[0, ..., 0], 0, 1)
        bicubic = np.clip(bicubic_upscale(low, scale).numpy()[0, ..., 0], 0, 1)
        truth = high.numpy()[0, ..., 0]
        top, left = (max(0, (d - CROP) // 2) for d in truth.shape)
        window = (slice(top, top + CROP), slice(left, left + CROP))
        rows.append(draw.side_by_side([np.repeat(x[window][..., None], 3, -1) for x in (bicubic, predicted, truth)]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, [(0, 2), (0, width - r.shape[1]), (0, 0)], constant_values=1.0) for r in rows]
    with staged_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(draw.array_png(np.concatenate(rows), scale=2))
    return path


TASKS.register("super_resolution")(SuperResolution())
