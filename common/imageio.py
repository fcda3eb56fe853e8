"""Reading and writing images: png/jpg/tif/bmp, 8- or 16-bit, grey or RGB(A), with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microrepro.common.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_image(path: str | Path, channels: int | None = None) -> np.ndarray:
    """Read an image as a numpy array, keeping its dtype (uint8 or uint16 usually).

    Args:
        path: image file (png, jpg, tif/tiff, bmp).
        channels: None keeps what the file has (H×W or H×W×C); 1 returns H×W grey
            (luminance for colour input); 3 returns H×W×3 (grey repeated, alpha dropped).

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array.

    Raises:
        DataError: missing, unreadable or empty file, named in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            image = tifffile.imread(path)
        else:
            import cv2

            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise ValueError("OpenCV could not decode it")
            if image.ndim == 3:
                order = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
                image = cv2.cvtColor(image, order)
    except Exception as err:  # noqa: BLE001 - any decoder error becomes one clear line
        raise DataError(f"{path}: unreadable image ({err})") from None
    if image.size == 0:
        raise DataError(f"{path}: empty image")
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # channel-first TIFF
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return convert_channels(image, channels)


def image_shape(path: str | Path) -> tuple[int, ...]:
    """The shape :func:`read_image` would return, read from the file's header (no pixels decoded).

    For TIFF the first series' shape is used (``(Z, H, W)`` for a z-stack, channel-first ``(C, H, W)``
    moved last as ``read_image`` does); for png/jpg/bmp only ``(H, W)`` is returned: those hold one
    plane.

    Raises:
        DataError: missing file, or a header that no decoder accepts, named in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(int(v) for v in tif.series[0].shape)
        else:
            from PIL import Image

            with Image.open(path) as img:
                shape = (int(img.size[1]), int(img.size[0]))
    except Exception as err:  # noqa: BLE001 - any decoder error becomes one clear line
        raise DataError(f"{path}: unreadable image ({err})") from None
    if 0 in shape or not shape:
        raise DataError(f"{path}: empty image")
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        shape = shape[1:] + shape[:1]  # channel-first TIFF, as read_image moves it
    if len(shape) == 3 and shape[-1] == 1:
        shape = shape[:2]
    return shape


def planes_in(shape: tuple[int, ...]) -> int:
    """How many 2-D planes an image of ``shape`` (as :func:`read_image` returns it) holds."""
    if len(shape) == 4 or (len(shape) == 3 and shape[-1] not in (1, 3, 4)):
        return int(shape[0])
    return 1


def convert_channels(image: np.ndarray, channels: int | None) -> np.ndarray:
    """Convert an H×W or H×W×C array to the requested channel count (see ``read_image``)."""
    if channels is None:
        return image
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if channels == 1:
        if image.ndim == 2:
            return image
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float64)
        grey = image[..., :3].astype(np.float64) @ weights
        if np.issubdtype(image.dtype, np.floating):  # float images keep their values (no rounding to 0/1)
            return grey.astype(image.dtype)
        return np.round(grey).astype(image.dtype)
    if channels == 3:
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=-1)
        return image[..., :3]
    raise ValueError(f"channels must be None, 1 or 3, not {channels}")


def to_float01(image: np.ndarray) -> np.ndarray:
    """Scale an integer image to float32 in [0, 1] by its dtype's range (floats pass through)."""
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    return image.astype(np.float32)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB or grey uint8/uint16 image (png/jpg/bmp/tif) creating parent folders."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, image)
        return path
    out = image
    if image.ndim == 3 and image.shape[-1] == 3:
        out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[-1] == 4:
        out = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    if not cv2.imwrite(str(path), out):
        raise DataError(f"{path}: could not write image")
    return path
