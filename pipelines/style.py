"""Training a fast stylizer (Johnson et al., 2016) from a YAML recipe: ``kcnn train-style CONFIG.yaml``.

The recipe names the content images (``photos``: random crops of scikit-learn's two bundled
photographs, no download; or any kcnn source such as ``folder:PATH``), the style image (a file, or
``china`` / ``flower``), the loss weights and the optimisation. The run directory receives the
resolved config, ``stylizer.keras``, ``history.csv``, ``style.png`` and ``preview.png`` (content
beside its stylisation), each written atomically. A finished run directory is not trained again.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import typing
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
import yaml

from pipelines.config import ConfigError, _coerce, _known, _plain

PHOTOS = "photos"
STYLIZER_FILE = "stylizer.keras"


@dataclass(frozen=True)
class StyleDataConfig:
    source: str = PHOTOS
    split: str = "train"
    image_size: int = 128
    batch_size: int = 4
    data_dir: typing.Optional[str] = None


@dataclass(frozen=True)
class StyleLossConfig:
    style_image: str = "flower"
    style_size: int = 256
    feature_weights: typing.Optional[str] = None
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 1e-6


@dataclass(frozen=True)
class StyleTrainConfig:
    steps: int = 200
    learning_rate: float = 1e-3
    residual_blocks: int = 5
    seed: int = 0


@dataclass(frozen=True)
class StyleConfig:
    data: StyleDataConfig = field(default_factory=StyleDataConfig)
    loss: StyleLossConfig = field(default_factory=StyleLossConfig)
    train: StyleTrainConfig = field(default_factory=StyleTrainConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(dataclasses.asdict(self)), sort_keys=False)


SECTIONS = {f.name: f.type for f in dataclasses.fields(StyleConfig)}


def load_style_config(path: str | None, overrides=()) -> StyleConfig:
    """Read a style recipe (YAML) and ``section.key=value`` overrides; unknown keys name the closest valid one."""
    raw: dict = {}
    if path:
        try:
            with open(path) as handle:
                raw = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path!r} is not valid YAML: {error}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping of sections ({', '.join(SECTIONS)})")
    raw = {key: dict(value or {}) for key, value in raw.items()}
    for override in overrides:
        key_path, sep, text = override.partition("=")
        section, dot, key = key_path.strip().partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {override!r} must look like section.key=value, e.g. train.steps=50")
        raw.setdefault(section, {})[key] = yaml.safe_load(text) if text.strip() else None
    sections = {}
    for section, values in raw.items():
        _known(section, SECTIONS, "section")
        cls = {"data": StyleDataConfig, "loss": StyleLossConfig, "train": StyleTrainConfig}[section]
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            _known(key, names, f"key in section {section!r}")
        hints = typing.get_type_hints(cls)
        sections[section] = cls(**{k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in values.items()})
    config = StyleConfig(**sections)
    for name in ("image_size", "batch_size"):
        if getattr(config.data, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {getattr(config.data, name)}")
    if config.data.image_size % 4:
        raise ConfigError(f"data.image_size must be a multiple of 4 (the stylizer downsamples twice by 2), "
                          f"got {config.data.image_size}")
    if config.train.steps < 1 or config.train.learning_rate <= 0:
        raise ConfigError("train.steps must be >= 1 and train.learning_rate > 0")
    return config


def style_image(config: StyleConfig) -> np.ndarray:
    """The style image as float32 RGB in [0, 255], its longer side ``loss.style_size``."""
    from kcnn.style import images

    name = config.loss.style_image
    samples = images.sample_images() if name in ("china", "flower") else None
    image = images.load_rgb(samples[name] if samples else name, "style")
    return images.resize(image, *images.fit_size(image.shape[:2], config.loss.style_size))


def content_dataset(config: StyleConfig) -> tf.data.Dataset:
    """Endless batches ``(content, content)`` of float32 RGB crops in [0, 255] at ``data.image_size``."""
    size, seed = config.data.image_size, config.train.seed
    if config.data.source == PHOTOS:
        from kcnn.style.images import sample_images

        photos = list(sample_images().values())
        dataset = tf.data.Dataset.from_tensor_slices(np.stack(photos)).repeat()
    else:
        from pipelines.preprocess import decode_image
        from pipelines.sources import load_source

        source = load_source(config.data.source, config.data.split, data_dir=config.data.data_dir)
        images = source.dataset.map(lambda image, label: image)
        if source.encoded:
            images = images.map(decode_image)
        else:
            images = images.map(lambda image: tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image)
        dataset = images.repeat().shuffle(256, seed=seed)

    def crop(image):
        image = tf.cast(image, tf.float32)
        shorter = tf.cast(tf.reduce_min(tf.shape(image)[:2]), tf.float32)
        # Scale so the shorter side is between 1x and 2x the crop, then take a random crop.
        scale = tf.random.uniform([], 1.0, 2.0, seed=seed) * size / shorter
        new_size = tf.cast(tf.math.ceil(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
        image = tf.image.resize(image, tf.maximum(new_size, size), antialias=True)
        image = tf.image.random_crop(image, (size, size, 3), seed=seed)
        return tf.clip_by_value(image, 0.0, 255.0)

    batches = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE).batch(config.data.batch_size, drop_remainder=True)
    return batches.map(lambda x: (x, x)).prefetch(tf.data.AUTOTUNE)


def train_style(config: StyleConfig, run_dir: str, progress=None, extractor=None) -> dict:
    """Train the stylizer; returns ``{"first_loss", "last_loss", "steps", "run_dir", "seconds"}``.

    ``progress``, if given, is called after every step with ``(done, total, loss)``. ``extractor`` (a
    ``kcnn.style.FeatureExtractor`` with ``kcnn.style.fast``'s layers) replaces the loss network that
    ``loss.feature_weights`` would build, e.g. to compare against Gatys' optimisation on the same one.
    """
    import time

    import keras

    from kcnn.style import compile_for_style, johnson2016
    from kcnn.style.images import atomic_write, save_png

    model_path = os.path.join(run_dir, STYLIZER_FILE)
    if os.path.exists(model_path):
        raise FileExistsError(f"{run_dir} already holds a trained stylizer; choose another --run-dir or delete it")
    keras.utils.set_random_seed(config.train.seed)
    style = style_image(config)
    dataset = content_dataset(config)  # fails here, before the run directory exists, on a bad source
    os.makedirs(run_dir, exist_ok=True)
    atomic_write(os.path.join(run_dir, "config.yaml"), config.to_yaml().encode())
    save_png(np.round(style).astype(np.uint8), os.path.join(run_dir, "style.png"))
    stylizer = johnson2016(residual_blocks=config.train.residual_blocks)
    compile_for_style(stylizer, style, feature_weights=config.loss.feature_weights,
                      learning_rate=config.train.learning_rate, content_weight=config.loss.content_weight,
                      style_weight=config.loss.style_weight, tv_weight=config.loss.tv_weight, extractor=extractor)
    started = time.perf_counter()
    # One step per epoch, so the history holds every step's own loss (not a running mean).
    callbacks = [] if progress is None else [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: progress(epoch + 1, config.train.steps, float(logs["loss"])))]
    losses = stylizer.fit(dataset, epochs=config.train.steps, steps_per_epoch=1, verbose=0,
                          callbacks=callbacks).history["loss"]
    seconds = time.perf_counter() - started
    _write_history(os.path.join(run_dir, "history.csv"), losses)
    temporary = os.path.join(run_dir, f".{STYLIZER_FILE}.tmp.keras")
    # The same layers in an uncompiled model: the file needs no perceptual loss (nor VGG) to load.
    keras.Model(stylizer.inputs, stylizer.outputs, name=stylizer.name).save(temporary)
    os.replace(temporary, model_path)
    content = next(iter(dataset))[0][:1]
    preview = np.concatenate([content[0].numpy(), np.asarray(stylizer.predict(content, verbose=0))[0]], axis=1)
    save_png(np.clip(np.round(preview), 0, 255).astype(np.uint8), os.path.join(run_dir, "preview.png"))
    return {"first_loss": losses[0], "last_loss": losses[-1], "steps": len(losses), "run_dir": run_dir,
            "seconds": seconds}


def _write_history(path: str, losses) -> None:
    from kcnn.style.images import atomic_write

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["step", "loss"])
    writer.writerows((step, f"{loss:.6g}") for step, loss in enumerate(losses, start=1))
    atomic_write(path, buffer.getvalue().encode())
