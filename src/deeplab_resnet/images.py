"""Reading images and label maps robustly, and writing label PNGs, colour masks and overlays."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .data.lists import Pair
from .dataset_info import DatasetInfo
from .errors import DeepLabError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# The largest image read by default: about 9000 x 9000. Decoding costs 3 bytes a pixel and the network
# far more; a bigger file is more often a mistake or a decompression bomb than a photo
# (``deeplab segment --max-pixels`` raises it).
MAX_PIXELS = 80_000_000


class NotAnImageError(DeepLabError):
    """The bytes are no image format PIL can read."""


class DamagedImageError(DeepLabError):
    """An image format PIL knows, but the data is damaged or truncated."""


class TooManyPixelsError(DeepLabError):
    """The image header announces more pixels than the limit allows (nothing was decoded)."""


def open_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Open and decode an image file as PIL reads it; a missing, damaged or too large (more than
    ``max_pixels`` pixels, checked from the header) file is a one-line :class:`DeepLabError` naming
    it, a read the system refuses an ``OSError``."""
    path = Path(path)
    if not path.exists():
        raise DeepLabError(f"file not found: {path}")
    if path.is_dir():
        raise DeepLabError(f"{path} is a directory, not an image")
    return _decode(path, str(path), max_pixels)


def decode_image_bytes(data: bytes, name: str = "image", max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """:func:`open_image` for an image held in memory (an upload): the same checks and errors, with
    ``name`` in the messages."""
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():  # PIL's own bomb warning: the limit below is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
        if max_pixels and img.width * img.height > max_pixels:
            raise TooManyPixelsError(
                f"{name}: {img.width}x{img.height} is {img.width * img.height / 1e6:.3g} megapixels, more than the "
                f"limit of {max_pixels / 1e6:.3g} (raise it with --max-pixels if the image is genuine)"
            )
        img.load()  # decode now, so truncated files fail here with a clear message
    except UnidentifiedImageError as exc:
        raise NotAnImageError(f"{name}: not an image file PIL can read") from exc
    except Image.DecompressionBombError as exc:  # PIL's own limit, far above ours: the header is absurd
        raise TooManyPixelsError(
            f"{name}: the image announces more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.3g} megapixels, more than "
            "can be decoded safely"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the system refused the read (permission, I/O error): not the file's content
        raise DamagedImageError(f"{name}: damaged or truncated image ({exc})") from exc
    return img


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL image → ``H x W x 3`` uint8 RGB (EXIF orientation applied, alpha dropped)."""
    with warnings.catch_warnings():  # damaged EXIF: PIL warns and goes on without it, as we do
        warnings.simplefilter("ignore", UserWarning)
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr * 255.0 / peak, 0, 255).round().astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_image(path: str | Path, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``H x W x 3`` uint8 RGB; :class:`DeepLabError` if it can't be, or if it
    has more than ``max_pixels`` pixels (``None`` or 0: no limit), checked before decoding."""
    return to_rgb_array(open_image(path, max_pixels))


def read_label(path: str | Path) -> np.ndarray:
    """Read a label PNG as class indices (``H x W`` uint8).

    Palette ("P") and greyscale ("L") images hold indices. An RGB(A) image is a colour mask,
    not indices: reading it as such would silently score near zero, so it is an error.
    """
    img = open_image(path)
    if img.mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if arr.max(initial=0) > 255:
            raise DeepLabError(f"{path}: label values above 255 (max {arr.max()}); labels must be 0..255")
        return arr.astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        raise DeepLabError(
            f"{path}: label is an {img.mode} colour image, not class indices; convert it with "
            "'deeplab data convert-masks'"
        )
    raise DeepLabError(f"{path}: unsupported label image mode {img.mode!r} (expected palette or greyscale)")


def size_mismatch(
    path: str | Path, size_hw: tuple[int, ...], expected_hw: tuple[int, ...], of: str = "its image"
) -> str | None:
    """The error message when a label map's ``(height, width)`` differs from what it labels, else ``None``."""
    if tuple(size_hw[:2]) == tuple(expected_hw[:2]):
        return None
    (h, w), (eh, ew) = size_hw[:2], expected_hw[:2]
    return f"{path}: size {w}x{h} differs from {of} ({ew}x{eh})"


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The RGB image and the label map of a list entry, checked to be the same size."""
    if pair.label is None:
        raise DeepLabError(f"{pair.image}: no ground truth in the list (line {pair.line})")
    image, label = read_image(pair.image), read_label(pair.label)
    mismatch = size_mismatch(pair.label, label.shape, image.shape)
    if mismatch:
        raise DeepLabError(mismatch)
    return image, label


def label_image(labels: np.ndarray, dataset: DatasetInfo) -> Image.Image:
    """A palette-mode PIL image whose pixel values are the class indices."""
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(dataset.palette_bytes())
    return img


def colorize(labels: np.ndarray, dataset: DatasetInfo) -> np.ndarray:
    """Class indices → ``H x W x 3`` uint8 colours of the dataset's palette."""
    table = np.asarray(dataset.palette_bytes(), dtype=np.uint8).reshape(256, 3)
    return table[np.asarray(labels, dtype=np.uint8)]


def overlay(image: np.ndarray, labels: np.ndarray, dataset: DatasetInfo, alpha: float = 0.5) -> np.ndarray:
    """The image blended with its colour mask (``alpha`` = weight of the mask)."""
    mask = colorize(labels, dataset).astype(np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * mask
    return out.round().clip(0, 255).astype(np.uint8)


def save_image(img: Image.Image, path: str | Path) -> None:
    """Save atomically (PNG or JPEG by suffix)."""
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt))


def png_bytes(img: Image.Image) -> bytes:
    """The PNG file :func:`save_image` writes for ``img``, in memory (what the web server sends)."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
