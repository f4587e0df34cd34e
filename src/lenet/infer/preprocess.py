"""Turn a user's image into what MNIST would have made of it. `lenet predict` and the web app share this.

MNIST's recipe (LeCun et al.): the digit's bounding box is fitted into 20x20 keeping its aspect ratio, with
anti-aliasing, then placed in a 28x28 field so that its centre of mass is at the centre.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import LenetError

# Far above any drawing or photo of a digit, far below a decompression bomb: checked before decoding.
MAX_IMAGE_PIXELS = 40_000_000
INK_THRESHOLD = 0.2  # a pixel is ink when brighter than this fraction of the brightest one


class ImageTooLarge(LenetError):
    """An image over the pixel limit (a decompression bomb, or just too big): refused before decoding."""


def open_image(source: str | os.PathLike | bytes | Image.Image, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open a PNG/JPEG/... from a path or bytes, refusing non-images and images over `max_pixels`."""
    if isinstance(source, Image.Image):
        return source
    name = "image" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(Path(source))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"{name}: {width}x{height} pixels is too large (limit {max_pixels:,})")
        image.load()
    except FileNotFoundError:
        raise LenetError(f"{name}: no such file") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name}: too many pixels (Pillow's decompression-bomb limit)") from None
    except UnidentifiedImageError:
        raise LenetError(f"{name}: not an image in a format Pillow reads (PNG, JPEG, GIF, BMP, ...)") from None
    except IsADirectoryError:
        raise LenetError(f"{name}: is a folder, not an image file") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise LenetError(f"{name}: not a readable image ({e})") from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Float array in [0, 255]; transparency is composited onto white, as a drawing on paper."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def ink_on_black(gray: np.ndarray) -> np.ndarray:
    """Light ink on a black background, as MNIST stores it: invert when the border is mostly light."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return 255.0 - gray if np.median(border) > 127 else gray


def centre_of_mass_shift(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left offset that puts `image`'s centre of mass at the centre of a size x size field."""
    h, w = image.shape
    total = image.sum()
    if total <= 0:
        return (size - h) // 2, (size - w) // 2
    rows, cols = np.arange(h), np.arange(w)
    cy = (image.sum(axis=1) * rows).sum() / total
    cx = (image.sum(axis=0) * cols).sum() / total
    top = int(round(size / 2 - 0.5 - cy))
    left = int(round(size / 2 - 0.5 - cx))
    # Keep the whole box inside the field: a lopsided digit gives up a little centring, not its ink.
    return min(max(top, 0), size - h), min(max(left, 0), size - w)


def mnist_style(gray: np.ndarray, box: int = 20, size: int = 28) -> np.ndarray:
    """Crop to the ink, fit into box x box keeping the aspect ratio, centre by mass in size x size (uint8)."""
    ink = ink_on_black(gray)
    ink = ink - ink.min()
    if ink.max() <= 0:
        return np.zeros((size, size), dtype=np.uint8)  # a blank canvas stays blank
    ys, xs = np.nonzero(ink > INK_THRESHOLD * ink.max())
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    crop = crop * (255.0 / crop.max())
    h, w = crop.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    fitted = Image.fromarray(crop.astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    fitted = np.asarray(fitted, dtype=np.float32)
    top, left = centre_of_mass_shift(fitted, size)
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + new_h, left : left + new_w] = fitted
    return np.clip(out, 0, 255).astype(np.uint8)


def fit_whole(gray: np.ndarray, size: int = 28) -> np.ndarray:
    """Fashion-MNIST style: the whole picture, light object on black, fitted into size x size."""
    ink = ink_on_black(gray)
    image = Image.fromarray(np.clip(ink, 0, 255).astype(np.uint8))
    image = ImageOps.pad(image, (size, size), method=Image.Resampling.LANCZOS, color=0)
    return np.asarray(image, dtype=np.uint8)


def preprocess(source, dataset: str = "mnist", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any image (path, bytes, PIL image, or a 2-d array of 0..255 gray) -> a 28x28 uint8 array, ink light.

    Digits and characters (mnist, kmnist) get MNIST's crop, 20x20 fit and centre of mass; clothes
    (fashion-mnist) are fitted whole, as Fashion-MNIST's product photos were.
    """
    if isinstance(source, np.ndarray):
        if source.ndim != 2:
            raise LenetError(f"expected a 2-d grayscale array, got shape {source.shape}")
        gray = source.astype(np.float32)
    else:
        gray = to_grayscale(open_image(source, max_pixels))
    return fit_whole(gray) if dataset == "fashion-mnist" else mnist_style(gray)
