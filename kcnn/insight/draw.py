"""Pictures: images scaled for display, heatmaps over images, tile grids, PNG files (matplotlib, Agg).

matplotlib is imported inside the functions that draw, so importing kcnn.insight stays light. Every
PNG is written atomically (a temporary name in the same directory, then renamed).
"""

from __future__ import annotations

import io

import numpy as np

from kcnn.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_display(image) -> np.ndarray:
    """A model input ``[H, W, C]`` (any range) -> ``[H, W, 3]`` in [0, 1] for showing (min-max scaled)."""
    image = np.asarray(image, dtype="float32")
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.full_like(image, 0.5)


def colorize(heatmap, cmap: str = "jet") -> np.ndarray:
    """A ``[H, W]`` map in [0, 1] -> RGB ``[H, W, 3]`` through a matplotlib colour map."""
    import matplotlib

    return np.asarray(matplotlib.colormaps[cmap](np.clip(heatmap, 0, 1))[..., :3], "float32")


def overlay(image, heatmap, *, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """The heatmap blended over the image: ``[H, W, 3]`` in [0, 1]."""
    base = to_display(image)
    heat = np.asarray(heatmap, "float32")
    if heat.shape != base.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} does not match the image's {base.shape[:2]}")
    return np.clip((1 - alpha) * base + alpha * colorize(heat, cmap), 0, 1)


def tile_image(tiles, columns: int, *, gap: int = 1, background: float = 1.0) -> np.ndarray:
    """Tiles ``[n, h, w, c]`` in [0, 1] -> one image ``[rows*(h+gap)-gap, columns*(w+gap)-gap, 3]``."""
    tiles = np.asarray(tiles, "float32")
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    n, h, w = tiles.shape[:3]
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    canvas = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), background, "float32")
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return canvas


def figure_png(figure, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _colorbar(figure, image, axis, label: str) -> None:
    """A slim colour bar beside ``axis`` for ``image`` (an imshow result), labelled ``label``."""
    bar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def panels_png(panels, titles=(), *, columns: int | None = None, size: float = 2.2, suptitle: str | None = None,
               heatmaps=None, dpi: int = 100) -> bytes:
    """Images (``[H, W]`` grey or ``[H, W, 3]`` in [0, 1]) side by side with titles, as PNG bytes.

    ``heatmaps`` maps panel indices to a colour-bar label: those ``[H, W]`` panels are drawn through
    the jet colour map (the one :func:`overlay` blends) with a colour bar beside them.
    """
    plt = _pyplot()
    panels = list(panels)
    heatmaps = dict(heatmaps or {})
    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns + 0.5 * bool(heatmaps),
                                                        size * rows + (0.4 if suptitle else 0)), squeeze=False)
    for i, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if i < len(panels):
            panel = np.asarray(panels[i])
            cmap = "jet" if i in heatmaps else ("gray" if panel.ndim == 2 else None)
            shown = axis.imshow(panel, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if i in heatmaps:
                _colorbar(figure, shown, axis, heatmaps[i])
            if i < len(titles):
                axis.set_title(titles[i], fontsize=9)
    if suptitle:
        figure.suptitle(suptitle, fontsize=11)
    figure.tight_layout()
    return figure_png(figure, dpi)


def save_panels(path: str, panels, titles=(), **kwargs) -> str:
    return atomic_write(path, panels_png(panels, titles, **kwargs))


def grid_png(grid, *, title: str | None = None, scale: int = 8, dpi: int = 100, max_labels: int = 64,
             colorbar: str | None = "each tile scaled to its own min (0) and max (1)") -> bytes:
    """A :class:`kcnn.insight.features.Grid` as PNG bytes, tiles magnified without smoothing.

    Up to ``max_labels`` tiles are labelled with ``grid.labels`` (channel numbers); grey tiles get a
    colour bar saying what their shades mean (``colorbar`` is its label; None leaves it out).
    """
    plt = _pyplot()
    canvas = tile_image(grid.tiles, grid.columns)
    height, width = canvas.shape[:2]
    tile_h, tile_w = grid.tiles.shape[1:3]
    labelled = bool(grid.labels) and len(grid) <= max_labels
    grey = grid.tiles.shape[-1] == 1
    inches = max(2.5, min(12.0, max(width * scale / dpi, 0.6 * grid.columns if labelled else 0)))
    figure, axis = plt.subplots(figsize=(inches + (0.8 if grey and colorbar else 0),
                                         inches * height / width + (0.4 if title else 0)))
    shown = axis.imshow(canvas[..., 0] if grey else canvas, cmap="gray" if grey else None, vmin=0, vmax=1,
                        interpolation="nearest")
    axis.axis("off")
    if labelled:
        for i, label in enumerate(grid.labels[:len(grid)]):
            r, c = divmod(i, grid.columns)
            short = str(label).rsplit(":", 1)[-1]  # "conv1:5" -> "5": the layer is in the title
            axis.text(c * (tile_w + 1) - 0.4, r * (tile_h + 1) - 0.4, short, color="yellow", fontsize=7,
                      va="top", ha="left", bbox={"facecolor": "black", "alpha": 0.55, "pad": 0.5, "linewidth": 0})
    if grey and colorbar:
        _colorbar(figure, shown, axis, colorbar)
    if title:
        axis.set_title(title, fontsize=10)
    return figure_png(figure, dpi)


def save_grid(path: str, grid, *, title: str | None = None) -> str:
    return atomic_write(path, grid_png(grid, title=title))


def plot_history_png(history, *, title: str, ylabel: str = "activation") -> bytes:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4, 2.6))
    axis.plot(np.arange(len(history)), history)
    axis.set(xlabel="step", ylabel=ylabel, title=title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure_png(figure)


def array_png(image, *, scale: int = 1) -> bytes:
    """An ``[H, W, 3]`` (or ``[H, W]``) image in [0, 1] as PNG bytes, magnified ``scale`` times (nearest)."""
    from PIL import Image

    pixels = np.clip(np.asarray(image, "float32"), 0, 1)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def side_by_side(images, *, gap: int = 2) -> np.ndarray:
    """``[H, W, 3]`` images in [0, 1] in one row, separated by white columns."""
    images = [to_display(i) if np.ndim(i) == 2 else np.asarray(i, "float32") for i in images]
    spacer = np.ones((images[0].shape[0], gap, 3), "float32")
    row = [images[0]]
    for image in images[1:]:
        row += [spacer, image]
    return np.concatenate(row, axis=1)


def save_png_bytes(path: str, data: bytes) -> str:
    return atomic_write(path, data)
