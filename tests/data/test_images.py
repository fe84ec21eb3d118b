"""Image decoding: formats converted correctly, bad files reported with the file and reason."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raybench.data.images import decode_image, decode_images
from raybench.errors import DataError


def _gradient(w: int = 40, h: int = 20) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))


def test_resize_and_gray(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "g.png")
    out = decode_image(tmp_path / "g.png", 16)
    assert out.shape == (16, 16) and out.dtype == np.uint8
    assert out[:, 0].mean() < 20 and out[:, -1].mean() > 235


def test_16bit_png_is_rescaled_not_clipped(tmp_path: Path) -> None:
    arr = (np.tile(np.linspace(1000, 4000, 32), (32, 1))).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "x16.png")
    out = decode_image(tmp_path / "x16.png", 32)
    assert out.min() == 0 and out.max() == 255
    assert 100 < out[:, 16].mean() < 155


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "LA"])
def test_colour_modes_become_luminance(tmp_path: Path, mode: str) -> None:
    gray = Image.fromarray(_gradient(32, 32))
    rgb = gray.convert("RGB")
    img = rgb.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)
    ext = "jpg" if mode == "CMYK" else "png"
    img.save(tmp_path / f"i.{ext}")
    out = decode_image(tmp_path / f"i.{ext}", 32)
    assert np.abs(out.astype(int) - np.asarray(gray, dtype=int)).mean() < 6


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40), dtype=np.uint8)
    arr[:, :10] = 255  # bright left edge
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = decode_image(tmp_path / "r.jpg", 40)
    assert out[:8].mean() > 200 and out[-8:].mean() < 50  # the bright edge is now on top


def test_bad_files_are_named_with_reason(tmp_path: Path) -> None:
    (tmp_path / "zero.png").write_bytes(b"")
    Image.fromarray(_gradient()).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name, reason in [("zero.png", "empty file"), ("trunc.png", "unreadable"),
                         ("junk.png", "unreadable"), ("missing.png", "not found")]:
        with pytest.raises(DataError, match=reason) as err:
            decode_image(tmp_path / name, 16)
        assert name in str(err.value)


def test_skip_policy_keeps_good_images_and_reports_bad(tmp_path: Path) -> None:
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    Image.fromarray(_gradient()).save(tmp_path / "c.png")
    paths = [tmp_path / n for n in ("a.png", "b.png", "c.png")]
    arr, keep, bad = decode_images(paths, 8, on_bad_image="skip")
    assert arr.shape == (2, 8, 8) and keep.tolist() == [True, False, True]
    assert len(bad) == 1 and bad[0].path.endswith("b.png") and "empty" in bad[0].reason
    with pytest.raises(DataError, match="b.png"):
        decode_images(paths, 8, on_bad_image="fail")
