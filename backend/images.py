"""Data set images as PNG thumbnails, with the loaded splits kept in memory.

A gallery page asks for dozens of images at once; loading (or generating) a split for each
would take seconds, so the last few splits stay in a small LRU. Loading the same split twice
at once is avoided by a lock per split.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.config import DataConfig
    from models.data import ImageSet

# Splits kept in memory: a few MB each for the small sets (shapes 2000×3×32×32 is 6 MB).
MAX_SPLITS = 6
# The side a split is loaded at when the request names none: each set's native resolution.
NATIVE_SIZE = {"stl10": 96, "imagefolder": 96}


class ImageCache:
    def __init__(self, max_splits: int = MAX_SPLITS) -> None:
        self.max_splits = max_splits
        self._sets: OrderedDict[str, ImageSet] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def split(self, cfg: DataConfig, split: str) -> ImageSet:
        """The split `cfg` describes; DatasetError when it cannot be loaded."""
        from models.data import load_dataset

        key = f"{split}:{cfg.model_dump_json()}"
        with self._lock:
            if key in self._sets:
                self._sets.move_to_end(key)
                return self._sets[key]
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._sets:
                    return self._sets[key]
            images = load_dataset(cfg, split)  # type: ignore[arg-type]
            with self._lock:
                self._sets[key] = images
                while len(self._sets) > self.max_splits:
                    self._sets.popitem(last=False)
                self._locks.pop(key, None)
            return images


def to_png(image: Any, size: int | None) -> bytes:
    """A uint8 (3, H, W) tensor as PNG, scaled so its side is `size` (when given).

    Enlarging uses nearest neighbour, so 16-px training images stay crisp pixels rather than
    a blur; shrinking uses a box filter (antialiased).
    """
    from PIL import Image

    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    if size is not None and size != pil.width:
        resample = Image.Resampling.NEAREST if size > pil.width else Image.Resampling.BOX
        pil = pil.resize((size, size), resample)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)  # speed over a few bytes: thumbnails are tiny
    return buf.getvalue()
