"""Pictures of the diffusion process: sample grids, the reverse-process strip and the forward-process strip."""

from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

MIN_TILE_PIXELS = 64  # small images (8x8 digits) are enlarged so a person can see them


def to_pil_images(x: torch.Tensor, tile_pixels: Optional[int] = None) -> List[Image.Image]:
    """(B, C, H, W) tensor in [-1, 1] -> PIL images ("L" for one channel), enlarged with nearest-neighbour."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    arrays = x.permute(0, 2, 3, 1).numpy()
    images = [Image.fromarray(a[..., 0]) if a.shape[-1] == 1 else Image.fromarray(a) for a in arrays]
    return [enlarge(image, tile_pixels) for image in images]


def enlarge(image: Image.Image, tile_pixels: Optional[int] = None) -> Image.Image:
    """Scale up by an integer factor (nearest) until the short side reaches `tile_pixels` (default 64)."""
    target = tile_pixels or MIN_TILE_PIXELS
    factor = max(1, -(-target // min(image.size)))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def grid_shape(n: int) -> tuple:
    """Rows and columns of the most nearly square grid that holds n images."""
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def make_image_grid(images: Sequence[Image.Image], rows: int, cols: int) -> Image.Image:
    """`rows` x `cols` cells filled row by row, in the images' own mode (diffusers' make_image_grid makes it RGB)."""
    images = list(images)
    if len(images) > rows * cols:
        raise ValueError(f"{len(images)} images do not fit a {rows}x{cols} grid.")
    w, h = images[0].size
    grid = Image.new(images[0].mode, (cols * w, rows * h))
    for i, image in enumerate(images):
        grid.paste(image, box=(i % cols * w, i // cols * h))
    return grid


def image_grid(images: Sequence[Image.Image]) -> Image.Image:
    """A near-square grid; missing cells are black."""
    images = list(images)
    rows, cols = grid_shape(len(images))
    return make_image_grid(images, rows, cols)


def trajectory_strip(trajectory, max_images: int = 4) -> Image.Image:
    """Two rows per image: x_T ... x_0 along the reverse chain, and below it the x_0 estimate at each step."""
    rows = []
    for b in range(min(max_images, trajectory.samples.shape[1])):
        rows += to_pil_images(trajectory.samples[:, b]) + to_pil_images(trajectory.pred_original_samples[:, b])
    return make_image_grid(rows, 2 * min(max_images, trajectory.samples.shape[1]), trajectory.samples.shape[0])


def forward_process_strip(scheduler, x_0: torch.Tensor, timesteps: Sequence[int], generator=None) -> Image.Image:
    """x_0 and draws of q(x_t | x_0) at the given timesteps, left to right, as in the seed's forward-process figure."""
    noise = torch.randn((len(timesteps), *x_0.shape[1:]), generator=generator, dtype=x_0.dtype)
    t = torch.as_tensor(list(timesteps), dtype=torch.long)
    x_t = scheduler.add_noise(x_0.expand(len(timesteps), *x_0.shape[1:]), noise, t)
    return make_image_grid(to_pil_images(torch.cat([x_0[:1], x_t])), 1, len(timesteps) + 1)


def load_image_as_tensor(path: str, resolution: Optional[int] = None) -> torch.Tensor:
    """An image file -> (1, C, H, W) in [-1, 1], grayscale kept as one channel, others as RGB."""
    with Image.open(path) as image:
        image.load()
        image = image.convert("L") if image.mode in ("L", "I;16", "I", "1", "LA") else image.convert("RGB")
    if resolution:
        image = image.resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32)
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1
