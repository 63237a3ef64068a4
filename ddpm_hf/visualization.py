# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Pictures of the diffusion process: sample grids, the reverse- and forward-process strips, the bound's terms, the
training loss."""

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .data.pixels import from_model_range

MIN_TILE_PIXELS = 64  # small images (8x8 digits) are enlarged so a person can see them


def to_pil_images(x: torch.Tensor, tile_pixels: int | None = None) -> list[Image.Image]:
    """(B, C, H, W) tensor in [-1, 1] -> PIL images ("L" for one channel), enlarged with nearest-neighbour."""
    arrays = from_model_range(x.cpu()).permute(0, 2, 3, 1).numpy()
    images = [Image.fromarray(a[..., 0]) if a.shape[-1] == 1 else Image.fromarray(a) for a in arrays]
    return [enlarge(image, tile_pixels) for image in images]


def enlarge(image: Image.Image, tile_pixels: int | None = None) -> Image.Image:
    """Scale up by an integer factor (nearest) until the short side reaches `tile_pixels` (default 64)."""
    target = tile_pixels or MIN_TILE_PIXELS
    factor = max(1, -(-target // min(image.size)))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def grid_shape(n: int) -> tuple:
    """Rows and columns of the most nearly square grid that holds n images."""
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def filled_grid_rows(n: int) -> int:
    """The rows of the most nearly square grid of n images with no empty cell (its rows <= its columns)."""
    rows = int(math.sqrt(n))
    while n % rows:
        rows -= 1
    return rows


def tile_images(images: Sequence[Image.Image], rows: int, cols: int, mode: str | None = None) -> Image.Image:
    """`rows` x `cols` cells filled row by row, in `mode` (default: the images' own; diffusers' make_image_grid makes
    it RGB)."""
    images = list(images)
    if len(images) > rows * cols:
        raise ValueError(f"{len(images)} images do not fit a {rows}x{cols} grid.")
    w, h = images[0].size
    grid = Image.new(mode or images[0].mode, (cols * w, rows * h))
    for i, image in enumerate(images):
        grid.paste(image, box=(i % cols * w, i // cols * h))
    return grid


def image_grid(images: Sequence[Image.Image], rows: int | None = None, mode: str | None = None) -> Image.Image:
    """A grid of `rows` rows (default: the most nearly square), filled row by row; missing cells are black."""
    images = list(images)
    if rows is None:
        rows, cols = grid_shape(len(images))
    else:
        cols = -(-len(images) // rows)
    return tile_images(images, rows, cols, mode=mode)


def trajectory_strip(trajectory, max_images: int = 4) -> Image.Image:
    """Two rows per image: x_T ... x_0 along the reverse chain, and below it the x_0 estimate at each step (one row
    per image where the sampler estimates no x_0)."""
    images = min(max_images, trajectory.samples.shape[1])
    estimates = trajectory.pred_original_samples
    rows = []
    for b in range(images):
        rows += to_pil_images(trajectory.samples[:, b])
        if estimates is not None:
            rows += to_pil_images(estimates[:, b])
    return tile_images(rows, images * (1 if estimates is None else 2), trajectory.samples.shape[0])


def forward_process_strip(scheduler, x_0: torch.Tensor, timesteps: Sequence[int], generator=None) -> Image.Image:
    """x_0 and draws of q(x_t | x_0) (Ho et al. 2020, eq. 4) at the given timesteps, left to right."""
    noise = torch.randn((len(timesteps), *x_0.shape[1:]), generator=generator, dtype=x_0.dtype)
    t = torch.as_tensor(list(timesteps), dtype=torch.long)
    x_t = scheduler.add_noise(x_0.expand(len(timesteps), *x_0.shape[1:]), noise, t)
    return tile_images(to_pil_images(torch.cat([x_0[:1], x_t])), 1, len(timesteps) + 1)


def load_image_as_tensor(path: str, resolution: int | None = None) -> torch.Tensor:
    """An image file -> (1, C, H, W) in [-1, 1], grayscale kept as one channel, others as RGB."""
    with Image.open(path) as image:
        image.load()
        image = image.convert("L") if image.mode in ("L", "I;16", "I", "1", "LA") else image.convert("RGB")
    if resolution:
        image = image.resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32)
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1


def plot_terms(bound, path: str, title: str = "") -> None:
    """A VariationalBound's mean term per timestep (log-scale y), decoder term marked; the prior and the total in the
    legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = bound.timesteps.numpy()
    mean_terms = bound.terms_bpd.mean(0).numpy()
    floor = max(float(mean_terms[mean_terms > 0].min()) if np.any(mean_terms > 0) else 1e-12, 1e-12)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(t[1:], np.maximum(mean_terms[1:], floor), lw=1.2, label="denoising KL terms $L_{t-1}$")
    ax.scatter(t[:1], mean_terms[:1], color="C3", zorder=3, label=f"decoder $L_0$ = {mean_terms[0]:.3f}")
    summary = bound.summary()
    ax.plot([], [], " ", label=f"prior $L_T$ = {summary['prior_bpd']:.2e}")
    ax.plot([], [], " ", label=f"total = {summary['total_bpd']:.3f} ± {summary['total_bpd_stderr']:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("timestep t (diffusers, 0-based)")
    ax.set_ylabel("bits/dim")
    ax.set_title(title or "variational bound: mean term per timestep")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def plot_loss_curve(loss_history, path: str) -> None:
    """The logged loss (and a moving average) against the step, log-scaled, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    if loss_history:
        steps, losses = np.asarray(loss_history, dtype=np.float64).T
        axes.plot(steps, losses, linewidth=0.8, alpha=0.5, label="loss (mean of each logging interval)")
        window = max(1, len(losses) // 20)
        if window > 1:
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            axes.plot(steps[window - 1 :], smooth, linewidth=1.6, label=f"moving average ({window} points)")
        axes.set_yscale("log")
        axes.legend()
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.set_title("Training loss")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
