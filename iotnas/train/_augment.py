"""Whole-batch operations on uint8 image tensors: crop, flip, normalise. No per-image Python."""

from __future__ import annotations

import torch


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``padding`` pixels in x and y, reflecting at the borders.

    Same as padding by reflection and cropping back to size, done with two gathers.
    """
    if padding == 0:
        return images
    n, c, h, w = images.shape
    dy = torch.randint(-padding, padding + 1, (n, 1), generator=generator, device=generator.device)
    dx = torch.randint(-padding, padding + 1, (n, 1), generator=generator, device=generator.device)
    rows = _reflect(dy.to(images.device) + torch.arange(h, device=images.device), h)
    cols = _reflect(dx.to(images.device) + torch.arange(w, device=images.device), w)
    out = images.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def flip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where ``mask`` (bool, one per image) is true."""
    return torch.where(mask.to(images.device)[:, None, None, None], images.flip(3), images)


def normalize(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, channels_last: bool = False
) -> torch.Tensor:
    """uint8 (N, C, H, W) on the 0-255 scale -> float32 with zero mean and unit variance per channel."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = images.to(dtype=torch.float32, memory_format=memory_format)
    return x.sub_(mean.view(1, -1, 1, 1)).mul_((1.0 / std).view(1, -1, 1, 1))
