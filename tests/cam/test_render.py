"""cam/render.py: overlay PNGs of stored CAMs, with and without the stored images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raybench.cam.render import _jet, render_overlays, upsampled
from raybench.camset import CamSet
from raybench.errors import RaybenchError


def _cams(images: np.ndarray | None, size: int = 16) -> CamSet:
    rng = np.random.default_rng(0)
    return CamSet(image_ids=["a/1", "b"], labels=["normal", "viral"], predicted=["viral", "viral"],
                  cams=rng.random((2, 4, 4)), method="cam", target_layer="layer4",
                  input_size=size, images=images)


def test_without_stored_images_the_png_is_the_heat_map_alone(tmp_path: Path) -> None:
    cams = _cams(None)
    rows = render_overlays(cams, tmp_path, ["b"])
    assert rows == [{"image_id": "b", "label": "viral", "predicted": "viral",
                     "path": str(tmp_path / "b.png")}]
    png = np.asarray(Image.open(tmp_path / "b.png"))
    assert png.shape == (16, 16, 3)  # the input size, one panel (no gray image beside it)
    np.testing.assert_array_equal(png, _jet(upsampled(cams, 1)))


def test_a_stored_image_of_another_size_than_the_maps_input_is_refused(tmp_path: Path) -> None:
    cams = _cams(np.zeros((2, 12, 12), dtype=np.uint8))  # input_size says 16 x 16
    with pytest.raises(RaybenchError) as err:
        render_overlays(cams, tmp_path)
    assert str(err.value) == ("CAM file: image a/1 is (12, 12) but the maps' input size is "
                              "(16, 16)")
    assert not list(tmp_path.glob("*.png"))
