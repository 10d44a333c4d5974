"""The one place where cohort image files are located, checked and opened.

Every reader of an item's image (adapters while checking a cohort, the embed stage, the phantom
ladder, contact sheets, the dashboard's thumbnail) goes through this module, so the same rules
hold everywhere:

* **Containment.** An item's ``image_path`` is relative to the cohort root (the root folder, or
  the folder holding the CSV file when ``--root`` names the file). Absolute paths are refused,
  and so is any path that resolves outside the root, through ``..`` or a symbolic link. A
  refused path is never opened.
* **Regular files only.** Images are opened through `engine.files.open_regular`: a FIFO or
  a device in an image's place is refused (never waited on or read without end).
* **Size.** Images whose shorter side is under `MIN_SIDE` pixels are refused: no model can see
  anything in them, and they are almost always icons or placeholders copied by mistake.
* **Bit depth.** Grayscale files with more than 8 bits per pixel (16-bit PNGs as PadChest and NIH
  ship them, with 10, 12 or 16 bits actually stored; 32-bit integer and float TIFFs) are
  windowed into 8 bits, as a radiology viewer does, instead of being clipped at 255 by
  Pillow's mode conversion (which turns most of a 12-bit radiograph white). The window is the
  stored-bits range: ``[0, 2**b - 1]`` with ``b`` the file's stored bits when known, else the
  smallest of 10, 12, 14 or 16 bits that holds the image's brightest pixel (so a 12-bit
  radiograph is divided by 4095/255 whatever its content, and the same anatomy in two files
  gives the same grey). An integer image whose values all fit in 8 bits is used as is. Images
  with negative or floating-point values, which have no stored-bits range, get the percentile
  window ``[p0.5, p99.5]`` of their own pixels (a viewer's automatic window).

This module needs only numpy and Pillow (the dashboard imports it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine import files
from engine.errors import EngineError

# Shorter side, in pixels, below which an image is refused.
MIN_SIDE = 16
# Pillow modes holding more than 8 bits per grayscale pixel.
HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "I;32", "F"})
# Stored-bit depths a radiograph is windowed to when the file does not say (DICOM BitsStored).
STORED_BITS = (10, 12, 14, 16)
# Percentile window for images without a stored-bits range (negative or float values).
PERCENTILE_WINDOW = (0.5, 99.5)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImagePathError(EngineError):
    """An image path that is absolute or leads outside the cohort root (never opened)."""


class ImageReadError(EngineError):
    """An image file that is missing, unreadable or too small."""


@dataclass(frozen=True)
class ImageInfo:
    """What a cheap header check found about one image file.

    Attributes:
        status: ``ok``, ``missing``, ``corrupt`` or ``too_small``.
        reason: Why, when not ``ok`` (a phrase completing "image X ...").
        width / height: Pixel size from the header (0 when unknown).
        mode: Pillow mode from the header (``L``, ``RGB``, ``I;16``, ...), "" when unknown.
    """

    status: str
    reason: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""

    @property
    def high_bit_depth(self) -> bool:
        """True when the pixels hold more than 8 bits and will be windowed on reading."""
        return self.mode in HIGH_BIT_MODES


def cohort_folder(root: str | Path) -> Path:
    """The folder image paths are relative to: `root`, or its parent when `root` is a file."""
    root = Path(root)
    return (root.parent if root.is_file() else root).resolve()


def resolve_image(root: str | Path, image_path: str, *, where: str = "") -> Path:
    """The image file of an item, guaranteed to lie inside the cohort root.

    Args:
        root: The cohort root (folder, or the cohort CSV file).
        image_path: The item's stored path, relative to the root.
        where: Context for the message, e.g. ``"cohort.csv, row 3"`` or ``"image_id i001"``.

    Returns:
        The resolved path (symbolic links followed) inside ``cohort_folder(root)``.

    Raises:
        ImagePathError: the path is empty or absolute, or resolves outside the root.
    """
    text = str(image_path)
    prefix = f"{where}: " if where else ""
    if not text.strip() or "\x00" in text:
        raise ImagePathError(f"{prefix}image path {text!r} is empty or contains a NUL byte")
    if (PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()
            or PureWindowsPath(text).drive or text.startswith("\\")):
        raise ImagePathError(
            f"{prefix}image path {text} is absolute; list images relative to the cohort root"
        )
    base = cohort_folder(root)
    candidate = base / text
    resolved = Path(os.path.realpath(candidate))
    if not resolved.is_relative_to(base):
        how = "through '..'" if ".." in PurePosixPath(text.replace("\\", "/")).parts else \
            "through a symbolic link"
        raise ImagePathError(
            f"{prefix}image path {text} resolves outside the cohort root {base} ({how}); "
            "it was not opened"
        )
    return resolved


def inspect_image(path: Path, *, min_side: int = MIN_SIDE) -> ImageInfo:
    """Cheap validity check of one image file: header, size, mode; pixels are not decoded.

    JPEG and PNG files must start with their magic bytes and end with their end marker (which
    catches truncated copies); Pillow parses the header for size and mode. Thousands of images
    take seconds.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return ImageInfo("missing", "not found")
    except OSError as exc:
        return ImageInfo("corrupt", f"cannot be read ({_first_line(exc)})")
    if not path.is_file():
        return ImageInfo("corrupt", "is not a regular file")
    if size == 0:
        return ImageInfo("corrupt", "is empty (0 bytes)")
    try:
        # Opened non-blocking and checked again on the descriptor: a FIFO swapped in after the
        # stat above is refused, never waited on.
        with files.open_regular(path, what="image") as fh:
            head = fh.read(16)
            fh.seek(max(0, size - 1024))
            tail = fh.read()
            if head.startswith(_JPEG_MAGIC) and b"\xff\xd9" not in tail:
                return ImageInfo("corrupt", "is truncated (no JPEG end-of-image marker)")
            if head.startswith(_PNG_MAGIC) and b"IEND" not in tail:
                return ImageInfo("corrupt", "is truncated (no PNG IEND chunk)")
            fh.seek(0)
            with Image.open(fh) as img:
                width, height = img.size
                mode = img.mode
    except files.InputFileError:
        return ImageInfo("corrupt", "is not a regular file")
    except UnidentifiedImageError:
        return ImageInfo("corrupt", "is not an image Pillow can read (unknown or damaged header)")
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return ImageInfo("corrupt", f"is not an image Pillow can read ({type(exc).__name__}: "
                                    f"{_first_line(exc)})")
    if width == 0 or height == 0:
        return ImageInfo("corrupt", f"has an empty size {width}x{height}", width, height, mode)
    if min(width, height) < min_side:
        return ImageInfo("too_small", f"is {width}x{height} pixels, smaller than the minimum "
                                      f"{min_side}x{min_side}", width, height, mode)
    return ImageInfo("ok", "", width, height, mode)


def stored_bits(max_value: float) -> int:
    """Bits a grayscale image uses: 8 when it fits in a byte, else the next of `STORED_BITS`."""
    if max_value <= 255:
        return 8
    needed = int(max_value).bit_length()
    return next((b for b in STORED_BITS if b >= needed), needed)


def window_to_8bit(pixels: np.ndarray, *, bits: int | None = None) -> np.ndarray:
    """Window a grayscale array of any depth into uint8 (the rule in the module docstring).

    Args:
        pixels: [H, W] integer or float array.
        bits: The stored bits when known (DICOM BitsStored); default: inferred from the maximum.
    """
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float32)
    if np.issubdtype(pixels.dtype, np.integer) and (values.size == 0 or values.min() >= 0):
        top = float(values.max()) if values.size else 0.0
        b = bits if bits is not None else stored_bits(top)
        low, high = 0.0, float(2**b - 1)
    else:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return np.zeros(pixels.shape, dtype=np.uint8)
        low, high = (float(v) for v in np.percentile(finite, PERCENTILE_WINDOW))
        if high <= low:
            high = low + 1.0
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_8bit(image: Image.Image, mode: str = "RGB", *, bits: int | None = None) -> Image.Image:
    """An 8-bit ``L`` or ``RGB`` copy of an opened image, high bit depths windowed."""
    if image.mode in HIGH_BIT_MODES:
        gray = Image.fromarray(window_to_8bit(np.asarray(image), bits=bits), mode="L")
        return gray if mode == "L" else gray.convert(mode)
    return image.convert(mode)


def load_image(path: Path, mode: str = "RGB", *, min_side: int = MIN_SIDE,
               bits: int | None = None) -> Image.Image:
    """Open an image file as 8-bit `mode` (``RGB`` or ``L``), windowed, size checked.

    Call it with a path from `resolve_image`; the file is decoded fully (and closed).

    Raises:
        ImageReadError: the file is missing, cannot be decoded, or is smaller than `min_side`.
    """
    try:
        with files.open_regular(path, what="image") as fh, Image.open(fh) as img:
            if min(img.size) < min_side:
                raise ImageReadError(
                    f"image {path} is {img.width}x{img.height} pixels, smaller than the minimum "
                    f"{min_side}x{min_side}"
                )
            img.load()
            return to_8bit(img, mode, bits=bits)
    except ImageReadError:
        raise
    except files.InputFileError as exc:
        raise ImageReadError(str(exc)) from None
    except FileNotFoundError:
        raise ImageReadError(f"image {path} not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"image {path} is not an image Pillow can read") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "unreadable", one line
        raise ImageReadError(
            f"image {path} cannot be decoded ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def open_image_file(path: str | Path):
    """`path` opened for binary reading if it is a regular file (`engine.files.open_regular`).

    Raises:
        ImageReadError: a FIFO, a device or a folder (the message says which).
        OSError: as `open` does (missing file, no permission).
    """
    try:
        return files.open_regular(path, what="image")
    except files.InputFileError as exc:
        raise ImageReadError(str(exc)) from None


def load_item_image(root: str | Path, image_path: str, mode: str = "RGB", *,
                    where: str = "") -> Image.Image:
    """`resolve_image` then `load_image`: an item's image as the models see it."""
    return load_image(resolve_image(root, image_path, where=where), mode)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
