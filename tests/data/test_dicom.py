"""DICOM decoding: Modality LUT, VOI LUT / window (peer: pydicom's own LUT functions),
percentile window, MONOCHROME1, bit depths, multi-frame, compressed syntaxes, bad files;
decoder dispatch in decode_image, the audit probe, and 16-bit PNG scaling."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import dicoms

pydicom = pytest.importorskip("pydicom", reason="DICOM tests need the 'dicom' extra (pydicom)")

from pydicom.pixels import apply_modality_lut, apply_windowing, get_encoder  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import JPEG2000Lossless, RLELossless, UID  # noqa: E402

from raybench import schema as S  # noqa: E402
from raybench.data import dicom  # noqa: E402
from raybench.data.audit import audit_manifest  # noqa: E402
from raybench.data.fingerprints import fingerprint_file, sidecar_path  # noqa: E402
from raybench.data.images import decode_image  # noqa: E402
from raybench.data.importers import ImportOptions, import_dataset, write_import  # noqa: E402
from raybench.errors import DataError  # noqa: E402


def _pydicom_display(ds, bits: int, invert: bool) -> np.ndarray:
    """The expected pixels from pydicom's own Modality LUT + windowing, scaled to 0..255."""
    values = apply_modality_lut(ds.pixel_array, ds)
    shown = apply_windowing(values, ds)
    lo = apply_modality_lut(np.array([0]), ds)[0]
    hi = apply_modality_lut(np.array([2 ** bits - 1]), ds)[0]
    unit = (shown - lo) / (hi - lo)
    return np.rint((1.0 - unit if invert else unit) * 255).astype(np.uint8)


def test_monochrome1_12_bit_with_a_window_matches_pydicom(tmp_path: Path) -> None:
    arr = dicoms.gradient(top=4095)
    path = dicoms.write(tmp_path / "m1.dcm", arr, bits_stored=12, photometric="MONOCHROME1",
                        WindowCenter=2048, WindowWidth=1024)
    pixels, info = dicom.decode_dicom(path)
    ds = pydicom.dcmread(path)
    assert np.array_equal(pixels, _pydicom_display(ds, 12, invert=True))
    # below the window: white (MONOCHROME1 shows low values bright); above it: black
    assert pixels[0, 0] == 255 and pixels[0, -1] == 0
    assert 0 < pixels[0, 16] < 255 and info.photometric == "MONOCHROME1" and info.bits == 12
    assert (info.width, info.height, info.frames, info.view) == (32, 24, 1, "PA")


def test_monochrome2_16_bit_rescale_applied_before_the_window(tmp_path: Path) -> None:
    arr = dicoms.gradient(top=65535)
    path = dicoms.write(tmp_path / "m2.dcm", arr, bits_stored=16, RescaleSlope=2,
                        RescaleIntercept=-1024, WindowCenter=40000, WindowWidth=60000)
    pixels, _ = dicom.decode_dicom(path)
    assert np.array_equal(pixels, _pydicom_display(pydicom.dcmread(path), 16, invert=False))
    # stored 20512 -> modality 40000 = the window centre: mid grey
    one = dicoms.write(tmp_path / "one.dcm", np.full((2, 2), 20512), bits_stored=16,
                       RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40000,
                       WindowWidth=60000)
    assert dicom.decode_dicom(one)[0][0, 0] == 128


def test_rescale_without_window_uses_the_percentile_window(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 65535, (40, 50))
    path = dicoms.write(tmp_path / "p.dcm", arr, bits_stored=16, RescaleSlope=0.5,
                        RescaleIntercept=100)
    values = arr * 0.5 + 100
    lo, hi = np.percentile(values, [0.5, 99.5])
    expected = np.rint(np.clip((values - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(dicom.decode_dicom(path)[0], expected)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("center,width", [(2048.0, 1024.0), (100.5, 1.0), (3000.0, 5000.0)])
def test_window_equals_pydicom_apply_windowing(function: str, center: float, width: float
                                               ) -> None:
    if width == 1.0 and function == "SIGMOID":
        width = 2.0
    arr = np.arange(0, 4096, 7)
    ds = Dataset()
    ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation = 12, 0, "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    peer = apply_windowing(arr, ds) / 4095.0
    assert np.allclose(dicom.window(arr, center, width, function), peer, atol=1e-12)


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path: Path) -> None:
    arr = dicoms.gradient(top=4095)
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 1000).astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: entries, first, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    path = dicoms.write(tmp_path / "lut.dcm", arr, bits_stored=12, WindowCenter=10,
                        WindowWidth=2, VOILUTSequence=Sequence([item]))
    expected = np.rint(lut[arr] / 1000 * 255).astype(np.uint8)
    assert np.array_equal(dicom.decode_dicom(path)[0], expected)


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
def test_bits_stored_8_to_16_span_the_display(tmp_path: Path, bits: int) -> None:
    arr = dicoms.gradient(top=2 ** bits - 1)
    path = dicoms.write(tmp_path / f"b{bits}.dcm", arr, bits_stored=bits)
    pixels, info = dicom.decode_dicom(path)
    assert info.bits == bits and pixels.dtype == np.uint8
    row = pixels[0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert dicom.probe_mode(info) == ("L" if bits == 8 else "I;16")


def test_multi_frame_takes_the_first_frame_and_says_so(tmp_path: Path, caplog) -> None:
    frames = np.stack([dicoms.gradient(top=4095), np.full((24, 32), 4095), np.zeros((24, 32))])
    path = dicoms.write(tmp_path / "mf.dcm", frames, bits_stored=12, WindowCenter=2048,
                        WindowWidth=4096)
    single = dicoms.write(tmp_path / "single.dcm", frames[0], bits_stored=12,
                          WindowCenter=2048, WindowWidth=4096)
    with caplog.at_level(logging.INFO):
        pixels, info = dicom.decode_dicom(path)
    assert info.frames == 3
    assert np.array_equal(pixels, dicom.decode_dicom(single)[0])
    assert "multi-frame DICOM (3 frames): the first frame is used" in caplog.text


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=lambda u: u.name)
def test_compressed_transfer_syntaxes_decode_like_native(tmp_path: Path, syntax: UID) -> None:
    encoder = get_encoder(syntax)
    if not encoder.is_available:
        pytest.skip(f"no {syntax.name} encoder installed here "
                    f"({'; '.join(encoder.missing_dependencies)})")
    arr = np.random.default_rng(1).integers(0, 4096, (64, 64))  # JPEG 2000 wants >= 32 px
    ds = dicoms.dataset(arr, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    native = dicoms.save(ds, tmp_path / "native.dcm")
    ds.compress(syntax, arr.astype(np.uint16))
    packed = dicoms.save(ds, tmp_path / "packed.dcm")
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(dicom.decode_dicom(packed)[0], dicom.decode_dicom(native)[0])


def _unsupported(path: Path) -> Path:
    """Pixel data in MPEG2 (a video syntax pydicom has no decoder for)."""
    from pydicom.encaps import encapsulate

    ds = dicoms.dataset(np.zeros((4, 4)), bits_stored=8)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return dicoms.save(ds, path)


def _truncated(path: Path) -> Path:
    data = dicoms.write(path, dicoms.gradient(), bits_stored=12).read_bytes()
    path.write_bytes(data[: len(data) - 600])
    return path


def test_unreadable_dicoms_name_the_reason(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mpeg\.dcm: cannot decode DICOM pixels: transfer "
                       r"syntax MPEG2.*no decoder"):
        dicom.decode_dicom(_unsupported(tmp_path / "mpeg.dcm"))
    with pytest.raises(DataError, match=r"cut\.dcm: cannot decode DICOM pixels"):
        dicom.decode_dicom(_truncated(tmp_path / "cut.dcm"))
    huge = dicoms.dataset(np.zeros((2, 2)), bits_stored=8)
    huge.Rows, huge.Columns = 20000, 20000  # declares 400 M pixels, holds 4
    with pytest.raises(DataError, match=r"bomb\.dcm: image of 20000 x 20000 .* exceeds the limit"):
        dicom.decode_dicom(dicoms.save(huge, tmp_path / "bomb.dcm"))
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom at all")
    with pytest.raises(DataError, match=r"junk\.dcm: unreadable DICOM"):
        dicom.decode_dicom(tmp_path / "junk.dcm")


def test_unreadable_dicom_under_both_bad_image_policies(tmp_path: Path) -> None:
    dicoms.write(tmp_path / "normal" / "good.dcm", dicoms.gradient(), bits_stored=12)
    bad = _unsupported(tmp_path / "normal" / "mpeg.dcm")
    with pytest.raises(DataError, match=re.escape(str(bad)) + r": cannot decode .*MPEG2"):
        import_dataset("folder", tmp_path)
    res = import_dataset("folder", tmp_path, ImportOptions(on_bad_image="skip"))
    assert res.df[S.PATH].tolist() == ["normal/good.dcm"]
    assert [Path(b.path).name for b in res.skipped] == ["mpeg.dcm"]
    assert "MPEG2" in res.skipped[0].reason and "no decoder" in res.skipped[0].reason


def test_decode_image_dispatches_dicom_by_suffix_and_by_content(tmp_path: Path) -> None:
    arr = dicoms.gradient(top=4095)
    named = dicoms.write(tmp_path / "a.dcm", arr, bits_stored=12, WindowCenter=2048,
                         WindowWidth=4096)
    bare = tmp_path / "scan"
    bare.write_bytes(named.read_bytes())
    shown = dicom.decode_dicom(named)[0]
    expected = np.asarray(Image.fromarray(shown).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(decode_image(named, 16), expected)
    assert np.array_equal(decode_image(bare, 16), expected)
    assert dicom.is_dicom(bare) and not dicom.is_dicom(tmp_path / "missing.png")


def test_audit_probe_reads_dicom(tmp_path: Path) -> None:
    path = dicoms.write(tmp_path / "a.dcm", dicoms.gradient(), bits_stored=12)
    probe = fingerprint_file(path)
    assert (probe.fmt, probe.mode, probe.size, probe.error) == ("DICOM", "I;16", (32, 24), None)
    assert probe.dhash is not None and probe.dhash.shape == (128,)
    bad = fingerprint_file(_unsupported(tmp_path / "mpeg.dcm"))
    assert bad.dhash is None and "MPEG2" in (bad.error or "")


def test_import_stores_no_dicom_fingerprint_and_the_audit_decodes_it(tmp_path: Path) -> None:
    """The stored fingerprint would carry the DICOM's bit depth (a header value): none is kept."""
    dicoms.write(tmp_path / "normal" / "a.dcm", dicoms.gradient(), bits_stored=12)
    Image.fromarray(dicoms.gradient().astype(np.uint8)).save(tmp_path / "normal" / "b.png")
    out = tmp_path / "m.parquet"
    write_import(import_dataset("folder", tmp_path), out)
    df = pd.read_parquet(out).set_index(S.PATH)
    stored = pd.read_parquet(sidecar_path(out))
    assert stored[S.SHA256].tolist() == [df.loc["normal/b.png", S.SHA256]]
    assert "I;16" not in stored.to_string()
    report = audit_manifest(out)
    assert report["per_source"][str(tmp_path.name)]["modes"] == {"I;16": 1, "L": 1}


def test_16_bit_png_with_12_bit_values_uses_the_full_range(tmp_path: Path) -> None:
    """PadChest-style film: 12 bits stored in a 16-bit PNG, values 100..4000."""
    arr = np.tile(np.linspace(100, 4000, 40).round(), (40, 1)).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "film.png")
    assert Image.open(tmp_path / "film.png").mode in ("I;16", "I")
    out = decode_image(tmp_path / "film.png", 40)
    expected = np.rint((arr.astype(float) - 100) * 255 / 3900).astype(np.uint8)
    assert np.array_equal(out, expected) and out.min() == 0 and out.max() == 255


def test_signed_pixels_with_a_rescale(tmp_path: Path) -> None:
    """PixelRepresentation 1: two's-complement 12-bit values in 16 bits, sign kept."""
    arr = np.tile(np.arange(-2048, 2048, 128), (4, 1))
    path = dicoms.write(tmp_path / "s.dcm", arr, bits_stored=12, signed=True, RescaleSlope=1,
                        RescaleIntercept=-1000, WindowCenter=-1000, WindowWidth=4096)
    pixels, _ = dicom.decode_dicom(path)
    expected = np.rint(dicom.window(arr - 1000.0, -1000, 4096) * 255).astype(np.uint8)
    assert np.array_equal(pixels, expected)
    assert pixels[0, 0] < 5 and pixels[0, -1] > 245 and (np.diff(pixels[0].astype(int)) > 0).all()
