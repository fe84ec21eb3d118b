"""Measures dHash distances on real chest X-rays to choose the near-duplicate threshold.

Three distributions (Hamming distance of the audit's dHash; ``SIDE`` 32 = 1024 bits, the audit's
default, or 16 = 256 bits, the audit's former default, via the second argument):

- *copies*: each of a seeded sample of real images against itself after the edits a radiograph
  goes through when a second collection republishes it (rescaled, re-encoded as JPEG, borders
  cropped, brightness / contrast / gamma changed, slightly rotated or shifted, a text marker
  burnt in, and combinations). These are known near duplicates: the threshold should catch
  nearly all of them with a margin.
- *same patient*: distinct files of one patient (follow-up films): not duplicates.
- *distinct*: every pair of files of different patients (all 15 M pairs): the threshold should
  flag almost none of them.

Run: ``PYTHONPATH=. python benchmarks/near_duplicates.py [DATA_DIR [SIDE]]`` (default
``../shared/data`` and 32).
Prints the quantiles and the cumulative counts at each distance; the figures chosen from are
recorded in ``raybench/data/near_duplicates.py`` next to ``NEAR_THRESHOLD``.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from raybench.data.fingerprints import HASH_SIDE, dhash, file_dhash
from raybench.data.importers import kermany_label_patient


def _files(data: Path) -> tuple[list[Path], list[str]]:
    files, patients = [], []
    for p in sorted((data / "kermany-cxr-train").rglob("*.jpeg")):
        files.append(p)
        patients.append("k/" + kermany_label_patient(p.name, p.parent.name)[1])
    import csv

    with open(data / "hannover-covid" / "data.csv", encoding="utf-8") as fh:
        by_stem = {r["image_id"]: r["patient_id"] for r in csv.DictReader(fh)}
    for p in sorted((data / "hannover-covid").rglob("*.png")):
        files.append(p)
        patients.append("h/" + by_stem.get(p.stem, p.stem))
    return files, patients


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("L").save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


def _crop(img: Image.Image, frac: float) -> Image.Image:
    w, h = img.size
    dx, dy = int(w * frac), int(h * frac)
    return img.crop((dx, dy, w - dx, h - dy))


def _marker(img: Image.Image) -> Image.Image:
    out = img.convert("L").copy()
    w, h = out.size
    ImageDraw.Draw(out).text((w * 0.05, h * 0.05), "R", fill=255)
    ImageDraw.Draw(out).rectangle((w * 0.8, h * 0.9, w * 0.95, h * 0.95), fill=255)
    return out


EDITS = {
    "resize_50": lambda im: im.resize((im.width // 2, im.height // 2)),
    "resize_to_224": lambda im: im.resize((224, 224)),
    "jpeg_q50": lambda im: _jpeg(im, 50),
    "crop_3pct": lambda im: _crop(im, 0.03),
    "crop_6pct": lambda im: _crop(im, 0.06),
    "brightness_+15pct": lambda im: ImageEnhance.Brightness(im.convert("L")).enhance(1.15),
    "contrast_+25pct": lambda im: ImageEnhance.Contrast(im.convert("L")).enhance(1.25),
    "gamma_0.7": lambda im: im.convert("L").point(lambda v: int(255 * (v / 255) ** 0.7)),
    "equalize": lambda im: ImageOps.equalize(im.convert("L")),
    "rotate_2deg": lambda im: im.convert("L").rotate(2, resample=Image.Resampling.BILINEAR),
    "rotate_4deg": lambda im: im.convert("L").rotate(4, resample=Image.Resampling.BILINEAR),
    "shift_3pct": lambda im: im.convert("L").rotate(0, translate=(im.width * 0.03, 0)),
    "marker": _marker,
    "crop_3pct+resize+jpeg": lambda im: _jpeg(_crop(im, 0.03).resize((300, 300)), 70),
    "contrast+rotate_2+jpeg": lambda im: _jpeg(ImageEnhance.Contrast(im.convert("L"))
                                               .enhance(1.2).rotate(2), 70),
}


def _full(path: Path, side: int) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        return dhash(im, side)


def _bits(h: np.ndarray) -> np.ndarray:
    return np.unpackbits(h, axis=-1).astype(np.float32)


def main(data: Path, side: int) -> None:
    files, patients = _files(data)
    t0 = time.perf_counter()
    imgs, hashes = {}, []
    for f in files:  # the audit's own decode path (JPEG draft size included)
        hashes.append(file_dhash(f) if side == HASH_SIDE else _full(f, side))
    print(f"{len(files)} images, {side * side}-bit dHash, hashed in {time.perf_counter() - t0:.1f} s")
    mat = _bits(np.stack(hashes))  # (N, 256)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(files), size=300, replace=False)
    copies: dict[str, list[int]] = {k: [] for k in EDITS}
    for i in sample:
        with Image.open(files[i]) as im:
            im.load()
            imgs[i] = im.copy()
        for name, edit in EDITS.items():
            copies[name].append(int(np.abs(_bits(dhash(edit(imgs[i]), side)) - mat[i]).sum()))
    print("copies (300 sampled images): distance quantiles 50/90/99/max per edit")
    photometric = [k for k in EDITS if not k.startswith(("crop", "rotate", "shift", "contrast+"))]
    allc = []
    for name, d in copies.items():
        allc += d if name in photometric else []
        q = np.quantile(d, [0.5, 0.9, 0.99])
        print(f"  {name:<26} {q[0]:5.1f} {q[1]:5.1f} {q[2]:5.1f} {max(d):4d}")
    _pairs(mat, np.array(patients), np.array(allc), side)


def _pairs(mat: np.ndarray, patients: np.ndarray, copies: np.ndarray, side: int) -> None:
    n = len(mat)
    nbits = side * side + 1
    hist_same = np.zeros(nbits, dtype=np.int64)
    hist_other = np.zeros(nbits, dtype=np.int64)
    for start in range(0, n, 512):
        block = mat[start:start + 512]
        dist = (block @ (1 - mat).T + (1 - block) @ mat.T).astype(np.int64)
        for k in range(len(block)):
            i = start + k
            d = dist[k, i + 1:]
            same = patients[i + 1:] == patients[i]
            hist_same += np.bincount(d[same], minlength=nbits)
            hist_other += np.bincount(d[~same], minlength=nbits)
    print("copies below: the photometric edits only (no crop / rotation / shift)")
    print("distance  copies<=d  same-patient pairs<=d  different-patient pairs<=d")
    cs, co = np.cumsum(hist_same), np.cumsum(hist_other)
    scale = side * side // 256
    for d in [scale * k for k in (0, 2, 4, 6, 8, 10, 11, 12, 14, 16, 18, 20, 24, 28, 32, 36, 40)]:
        print(f"  {d:3d}   {np.mean(copies <= d):7.3f}   {cs[d]:10d}   {co[d]:12d}")
    print(f"pairs: same patient {cs[-1]}, different patients {co[-1]}; closest different-"
          f"patient pair: {int(np.argmax(hist_other > 0))} bits")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data"),
         int(sys.argv[2]) if len(sys.argv) > 2 else 32)
