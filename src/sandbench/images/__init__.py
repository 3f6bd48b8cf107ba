"""Root file systems every environment boots from: built once, cached by the hash of inputs."""

from __future__ import annotations

from sandbench.images.base import Image, ImageBuilder, get_builder, image_names

__all__ = ["Image", "ImageBuilder", "get_builder", "image_names", "ensure"]


def ensure(name: str, force: bool = False) -> Image:
    """The cached image, built first if its inputs changed or it was never built."""
    return get_builder(name).ensure(force=force)
