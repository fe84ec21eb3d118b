"""The pure-PyTorch loop: learning, determinism, sharding, errors (no Ray)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from raybench.config import DataConfig, TrainConfig
from raybench.data.dataset import prepare_data
from raybench.engine.loop import (
    FitOptions, _batches, evaluate, fit, seed_everything, shard_batch_size,
)
from raybench.errors import ConfigError
from raybench.models import build_model, get_model_spec

CNNX = get_model_spec("cnnx")
NORM = (CNNX.mean, CNNX.std)


@pytest.fixture(scope="module")
def data(synth_manifest: Path):
    cfg = DataConfig(manifest=str(synth_manifest), test_fraction=0.25,
                     cache_dir=str(synth_manifest.parent / "cache"))
    return prepare_data(cfg, 64)


def _train(data, epochs: int = 3, seed: int = 0, **kw):
    cfg = TrainConfig(epochs=epochs, seed=seed, **kw)
    seed_everything(seed)
    model = build_model("cnnx", len(data.labels), image_size=64)
    return model, fit(model, data, cfg, FitOptions(NORM, torch.device("cpu")))


def test_cnnx_learns_synthetic_classes(data) -> None:
    model, result = _train(data)
    assert [h.epoch for h in result.history] == [1, 2, 3]
    assert result.history[-1].train_loss < result.history[0].train_loss
    test = result.test.metrics
    assert test.n == len(data.test) == 40
    # Chance is 0.25 with 4 balanced classes; P(>= 20/40 correct by chance) < 1e-3.
    assert test.accuracy >= 0.5
    assert test.macro_auc >= 0.85
    assert result.test.probs.shape == (40, 4)
    assert result.test.probs.sum(axis=1) == pytest.approx([1.0] * 40, abs=1e-5)
    assert result.train_images == 3 * len(data.train)


def test_training_is_deterministic_on_cpu(data) -> None:
    _, a = _train(data, epochs=2, seed=3)
    _, b = _train(data, epochs=2, seed=3)
    _, c = _train(data, epochs=2, seed=4)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert (a.test.probs == b.test.probs).all()
    assert [h.train_loss for h in a.history] != [h.train_loss for h in c.history]


def test_on_epoch_callback_and_resume_start(data) -> None:
    seen = []
    seed_everything(0)
    model = build_model("cnnx", 4, image_size=64)
    fit(model, data, TrainConfig(epochs=3), FitOptions(
        NORM, torch.device("cpu"), on_epoch=lambda stats, m: seen.append((stats.epoch, m is model)),
        start_epoch=1))
    assert seen == [(2, True), (3, True)]


def test_a_run_resumed_after_its_last_epoch_still_has_its_validation(data) -> None:
    """A trial killed after its last epoch, before its results, resumes with nothing to train:
    its validation is the restored model's, the same as its last epoch's."""
    model, done = _train(data, epochs=2)
    again = fit(model, data, TrainConfig(epochs=2), FitOptions(NORM, torch.device("cpu"),
                                                               start_epoch=2))
    assert again.history == [] and again.val is not None and done.val is not None
    assert (again.val.probs == done.val.probs).all()
    assert again.val.metrics.balanced_accuracy == done.history[-1].val_balanced_accuracy


def test_batch_larger_than_training_split_is_rejected(data) -> None:
    with pytest.raises(ConfigError, match=r"batch_size=500 is larger than the training split \(\d+ images\)"):
        _train(data, epochs=1, batch_size=500)


def test_shards_partition_each_epoch() -> None:
    """With 2 workers each sample is seen at most once per epoch, ranks get equal shares."""
    shards = [torch.cat(list(_batches(23, 4, seed=0, epoch=1, rank=r, world=2))) for r in (0, 1)]
    both = torch.cat(shards)
    assert len(shards[0]) == len(shards[1]) == 11
    assert len(set(both.tolist())) == 22 and set(both.tolist()) <= set(range(23))
    steps = [len(list(_batches(n, 8, 0, 0, r, 2))) for n in range(16, 40) for r in (0, 1)]
    assert steps[0::2] == steps[1::2]  # same number of steps on both ranks, always
    assert shard_batch_size(15, 2) == 8 and shard_batch_size(15, 1) == 15


def test_lone_trailing_sample_is_not_a_batch() -> None:
    sizes = [len(b) for b in _batches(16, 15, seed=0, epoch=0, rank=0, world=1)]
    assert sizes == [15]


def test_bf16_autocast_path_runs(data) -> None:
    small = dataclasses.replace(data.test)
    seed_everything(0)
    model = build_model("cnnx", 4, image_size=64)
    ev = evaluate(model, small, data.labels, NORM, torch.device("cpu"), precision="bf16")
    assert ev.probs.shape == (len(small), 4) and ev.probs.dtype.kind == "f"
