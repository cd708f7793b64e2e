"""A picture of what an augmentation recipe does: originals beside augmented versions."""

from __future__ import annotations

import numpy as np

from pipelines.data import DataSpec, make_dataset
from pipelines.run_dir import staged_path


def _to_pixels(images: np.ndarray, spec) -> np.ndarray:
    """Undo the normalisation for display: model inputs -> [0, 1] RGB."""
    unit = images * np.asarray(spec.std, np.float32) + np.asarray(spec.mean, np.float32)
    unit = np.clip(unit[..., ::-1] if spec.channel_order == "bgr" else unit, 0.0, 1.0)
    return np.repeat(unit, 3, axis=-1) if unit.shape[-1] == 1 else unit


def _caption(label, class_names) -> str:
    """A class name, or for mixed labels the two largest weights (e.g. '3 0.62 / 8 0.38')."""
    label = np.asarray(label)
    if label.ndim == 0:
        return class_names[int(label)]
    order = np.argsort(label)[::-1]
    parts = [f"{class_names[i]} {label[i]:.2f}" for i in order[:2] if label[i] > 1e-3]
    return " / ".join(parts)


def augment_grid(source, out: str, *, preset: str = "inception", mix: str | None = None, split: str = "train",
                 rows: int = 6, versions: int = 5, image_size: int = 64, seed: int = 0, **source_kwargs) -> str:
    """Write a PNG grid: each row one image, first its evaluation view, then ``versions`` augmented draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows < 1 or versions < 1:
        raise ValueError(f"rows and versions must be >= 1, got rows={rows}, versions={versions}")
    spec = DataSpec.create(source, image_size=image_size, batch_size=rows, augment=preset, mix=mix, seed=seed,
                           train_split=split, **source_kwargs)
    originals, info = make_dataset(spec.evaluation(), split)
    images, labels = next(iter(originals))
    augmented, _ = make_dataset(spec, split, shuffle=False)
    draws = [next(iter(augmented)) for _ in range(versions)]  # each iteration draws new randomness
    names = info.class_names
    figure, axes = plt.subplots(rows, versions + 1, figsize=(1.9 * (versions + 1), 2.0 * rows), squeeze=False)
    for r in range(rows):
        columns = [(images, labels, "original")] + [(x, y, f"{preset}{'+' + mix if mix else ''}") for x, y in draws]
        for c, (batch, label_batch, title) in enumerate(columns):
            axis = axes[r][c]
            axis.imshow(_to_pixels(batch[r].numpy(), spec.preprocessing), interpolation="nearest")
            axis.set_title(f"{title}\n{_caption(label_batch[r].numpy(), names)}", fontsize=8)
            axis.axis("off")
    figure.suptitle(f"{info.source} ({split}): {preset}{' with ' + mix if mix else ''}", fontsize=10)
    figure.tight_layout()
    with staged_path(out) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return out
