"""A folder of the files a web scrape brings: each is (name, bytes or maker, expected outcome)."""

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _pil(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _cv(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG of a few kB whose header claims width x height RGB pixels."""
    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 16)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _noisy(size=(24, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def usable_files() -> dict[str, bytes]:
    """Files that are images in unusual forms: all must be used."""
    rgba = np.dstack([_noisy(), np.full((24, 32), 128, np.uint8)])
    deep = (_noisy().astype(np.uint16) * 257)
    return {
        "1_alpha.png": _cv(rgba, ".png"),
        "1_gray.png": _cv(_noisy()[..., 0], ".png"),
        "1_deep16.png": _cv(deep, ".png"),
        "1_cmyk.jpg": _pil(Image.fromarray(_noisy()).convert("CMYK"), "JPEG"),
        "1_anim.gif": _pil(Image.fromarray(_noisy()), "GIF"),
        "2_photo.webp": _pil(Image.fromarray(_noisy(seed=1)), "WEBP"),
        "2_tiny.png": _cv(_noisy((1, 1)), ".png"),
        "2_with spaces.jpg": _cv(_noisy(seed=2), ".jpg"),
        "2_chien_é_犬.jpg": _cv(_noisy(seed=3), ".jpg"),
        "2_ok.jpg": _cv(_noisy(seed=4), ".jpg"),
    }


def refused_files() -> dict[str, tuple[bytes, str]]:
    """Files that are not usable images, with a word of the reason they must be refused for."""
    jpeg = _cv(_noisy((64, 64), seed=5), ".jpg")
    return {
        "3_zero.jpg": (b"", "empty file"),
        "3_truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "3_text.jpg": (b"<html>not found</html>\n", "not a decodable image"),
        "3_bomb.png": (decompression_bomb(), "decompression bomb"),
    }


NON_UTF8_NAME = b"2_caf\xe9.jpg"  # Latin-1 bytes, not valid UTF-8


def make_hostile_folder(src: Path, outside: Path) -> None:
    """Write every case into `src`, plus a non-UTF-8 name, a symlink loop and a link out of `src`."""
    src.mkdir(parents=True, exist_ok=True)
    for name, data in usable_files().items():
        (src / name).write_bytes(data)
    for name, (data, _) in refused_files().items():
        (src / name).write_bytes(data)
    with open(os.path.join(os.fsencode(src), NON_UTF8_NAME), "wb") as f:
        f.write(_cv(_noisy(seed=6), ".jpg"))
    os.symlink(src / "3_loop_b.jpg", src / "3_loop_a.jpg")
    os.symlink(src / "3_loop_a.jpg", src / "3_loop_b.jpg")
    outside.write_bytes(_cv(_noisy(seed=7), ".jpg"))
    os.symlink(outside, src / "3_outside.jpg")
