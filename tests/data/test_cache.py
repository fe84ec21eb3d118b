"""Decoded-image cache: built once, reused, keyed by content, atomic, shared by readers."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raybench import schema as S
from raybench.config import DataConfig
from raybench.data import cache
from raybench.data.cache import cache_key, decoded_images
from raybench.data.dataset import prepare_data
from raybench.data.images import decode_image
from raybench.data.importers import import_dataset
from raybench.errors import DataError


@pytest.fixture
def small(tmp_path: Path) -> tuple[pd.DataFrame, list[Path]]:
    root = tmp_path / "d"
    for i in range(6):
        label = "normal" if i % 2 else "viral"
        arr = np.tile(np.linspace(0, 255, 30 + i, dtype=np.uint8), (20, 1))
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / label / f"{i}.png")
    res = import_dataset("folder", root)
    return res.df, [root / p for p in res.df[S.PATH]]


def test_built_once_then_reused(small, tmp_path: Path) -> None:
    df, files = small
    first = decoded_images(df, files, 16, tmp_path / "c")
    second = decoded_images(df, files, 16, tmp_path / "c")
    assert first.built and not second.built
    assert second.images.shape == (6, 16, 16) and second.images.dtype == np.uint8
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    for i, f in enumerate(files):
        assert np.array_equal(second.images[i], decode_image(f, 16))
    assert second.image_ids == df[S.IMAGE_ID].tolist() and second.ok.all()
    key = cache_key(df, 16)
    assert [p.name for p in (tmp_path / "c" / "decoded").iterdir()] == [key]
    names = sorted(p.name for p in (tmp_path / "c" / "decoded" / key).iterdir())
    assert names == ["shard-00000.json", "shard-00000.npy"]  # no claim or temporary file left


def test_key_changes_with_content_size_and_mode(small) -> None:
    df, _ = small
    changed = df.copy()
    changed.loc[2, S.SHA256] = "0" * 64
    keys = {cache_key(df, 16), cache_key(df, 32), cache_key(changed, 16),
            cache_key(df.iloc[::-1], 16)}
    assert len(keys) == 4 and cache_key(df.copy(), 16) == cache_key(df, 16)
    with pytest.raises(DataError, match="mode 'RGB'; allowed: L"):
        decoded_images(df, [], 16, ".", mode="RGB")


def test_rebuilt_when_the_manifest_changes(small, tmp_path: Path) -> None:
    df, files = small
    decoded_images(df, files, 16, tmp_path / "c")
    Image.new("L", (30, 20), 7).save(files[0])  # new pixels -> new hash in a re-import
    df2 = df.copy()
    df2.loc[0, S.SHA256] = "f" * 64
    again = decoded_images(df2, files, 16, tmp_path / "c")
    assert again.built and int(again.images[0].max()) == 7


def test_bad_images_fail_or_are_recorded(small, tmp_path: Path) -> None:
    df, files = small
    files[3].write_bytes(b"")
    with pytest.raises(DataError, match=f"{files[3]}: empty file"):
        decoded_images(df, files, 16, tmp_path / "c")
    assert not [p for p in (tmp_path / "c" / "decoded").rglob("*") if p.is_file()]  # nothing
    entry = decoded_images(df, files, 16, tmp_path / "c", on_bad_image="skip")
    assert entry.ok.tolist() == [True, True, True, False, True, True]
    assert [Path(b.path).name for b in entry.bad] == [files[3].name]
    with pytest.raises(DataError, match="empty file.*on_bad_image=fail; 1 bad image"):
        decoded_images(df, files, 16, tmp_path / "c")  # the recorded entry still refuses


def test_concurrent_builders_decode_once(small, tmp_path: Path) -> None:
    df, files = small
    results, errors = [], []

    def work() -> None:
        try:
            results.append(decoded_images(df, files, 24, tmp_path / "c"))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sum(r.built for r in results) == 1
    assert all(np.array_equal(r.images, results[0].images) for r in results)


def test_a_claim_won_on_an_old_listing_of_a_published_shard_decodes_nothing(
        small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another builder publishes the shard and deletes its claim between our listing and our
    claim: our claim then succeeds, and only a second look shows the shard is there (CI saw
    148 decodes for 90 images on two nodes under load before the second look)."""
    df, files = small
    real, decodes, raced = cache._store_names, [], []
    monkeypatch.setattr(cache, "_decode_into", lambda *a, real=cache._decode_into:
                        decodes.append(1) or real(*a))

    def stale_listing(entry):
        names = real(entry)
        if not raced:
            raced.append(1)
            other = decoded_images(df, files, 24, tmp_path / "c")  # builds, publishes, lets go
            assert other.built and real(entry) - names == {"shard-00000.json",
                                                           "shard-00000.npy"}
        return names

    monkeypatch.setattr(cache, "_store_names", stale_listing)
    ours = decoded_images(df, files, 24, tmp_path / "c")
    assert decodes == [1] and not ours.built
    assert np.array_equal(ours.images, np.stack([decode_image(f, 24) for f in files]))
    names = sorted(p.name for p in (tmp_path / "c" / "decoded" / cache_key(df, 24)).iterdir())
    assert names == ["shard-00000.json", "shard-00000.npy"]  # our claim went too


def test_prepare_data_same_with_and_without_cache(synth_manifest: Path, tmp_path: Path) -> None:
    cfg = DataConfig(manifest=str(synth_manifest), cache_dir=str(tmp_path), test_fraction=0.25)
    cached = prepare_data(cfg, 32)
    plain = prepare_data(dataclasses.replace(cfg, decoded_cache=False), 32)
    assert list((tmp_path / "decoded").rglob("shard-00000.npy"))
    for name in ("train", "val", "test"):
        a, b = getattr(cached, name), getattr(plain, name)
        assert a.image_ids == b.image_ids
        assert np.array_equal(a.images.numpy(), b.images.numpy())
        assert np.array_equal(a.targets.numpy(), b.targets.numpy())


def test_warming_splits_each_data_config_once(synth_manifest: Path, tmp_path: Path,
                                              monkeypatch) -> None:
    """A 2,000-cell grid of seeds shares one data config: its split is planned once, not once
    a cell (the driver's start-up grew with cells x manifest rows)."""
    from raybench.data import dataset

    planned: list[DataConfig] = []
    real = dataset._make_plan
    monkeypatch.setattr(dataset, "_PLANS", type(dataset._PLANS)())  # none from earlier tests
    monkeypatch.setattr(dataset, "_make_plan", lambda c, p: planned.append(c) or real(c, p))
    cfg = DataConfig(manifest=str(synth_manifest), cache_dir=str(tmp_path), test_fraction=0.25)
    other = dataclasses.replace(cfg, split_seed=cfg.split_seed + 1)
    jobs = [(cfg, 32)] * 50 + [(other, 32)] * 50 + [(cfg, 24)]
    assert dataset.warm_decoded_cache(jobs) == 2  # one manifest at two sizes
    assert planned == [cfg, other]
    assert {p.name for p in (tmp_path / "decoded").iterdir()} == {
        cache_key(pd.read_parquet(synth_manifest), 32), cache_key(pd.read_parquet(synth_manifest), 24)}
