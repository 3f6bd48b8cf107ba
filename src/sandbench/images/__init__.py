"""Root file systems every environment boots from: built once, cached by the hash of inputs.

The builders are listed here, above the modules that define them (images.base holds the
common ImageBuilder, minimal and full the two images): no module imports back up."""

from __future__ import annotations

from collections.abc import Callable

from sandbench.errors import UsageError
from sandbench.images.base import Image, ImageBuilder
from sandbench.images.full import FullImage
from sandbench.images.minimal import MinimalImage

__all__ = ["Image", "ImageBuilder", "get_builder", "image_names", "ensure"]

_BUILDERS: dict[str, Callable[[], ImageBuilder]] = {"minimal": MinimalImage, "full": FullImage}


def image_names() -> list[str]:
    return sorted(_BUILDERS)


def get_builder(name: str) -> ImageBuilder:
    if name not in _BUILDERS:
        raise UsageError(f"unknown image {name!r}; known: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name]()


def ensure(name: str, force: bool = False) -> Image:
    """The cached image, built first if its inputs changed or it was never built."""
    return get_builder(name).ensure(force=force)
