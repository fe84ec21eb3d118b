"""Writes trials with known outcomes through ResultStore, as raybench.engine.run does.

Each trial's test set has ``n`` images per class; the first ``correct[label]`` of a class are
predicted right and the rest as the next class, so every sensitivity is ``correct / n`` and
the metrics rows come from raybench.metrics exactly as in a real run.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from raybench import schema as S
from raybench.metrics import compute_metrics
from raybench.store import ResultStore


def trial_predictions(labels: Sequence[str], n: int, correct: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(y_true (N,), probs (N, K)) with the given number of correct predictions per class."""
    k = len(labels)
    y_true = np.repeat(np.arange(k), n)
    y_pred = y_true.copy()
    for c, label in enumerate(labels):
        wrong = np.flatnonzero(y_true == c)[correct[label]:]
        y_pred[wrong] = (c + 1) % k
    probs = np.full((len(y_true), k), 0.3 / max(k - 1, 1))
    probs[np.arange(len(y_true)), y_pred] = 0.7
    return y_true, probs


def write_trial(store: ResultStore, sweep: str, trial_id: str, *, model: str, seed: int,
                scenario: str, labels: Sequence[str], n: int, correct: dict[str, int],
                epochs: int = 3, lr: float = 3e-4, status: str = "completed") -> None:
    """All four tables of one trial."""
    y_true, probs = trial_predictions(labels, n, correct)
    result = compute_metrics(y_true, probs, labels)
    store.write_table(sweep, "epochs", trial_id, [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_accuracy": 0.5,
         "val_balanced_accuracy": 0.4 + 0.1 * e, "val_macro_auc": 0.8, "lr": lr,
         "seconds": 1.5, "train_images_per_s": 30.0} for e in range(1, epochs + 1)])
    store.write_table(sweep, "metrics", trial_id, result.to_rows("test"))
    preds = pd.DataFrame({f"p_{lab}": probs[:, i] for i, lab in enumerate(labels)})
    preds.insert(0, S.SPLIT, "test")  # a required column (write_table refuses a row without)
    preds.insert(1, S.IMAGE_ID, [f"img{i:03d}" for i in range(len(y_true))])
    preds.insert(2, S.LABEL, [labels[i] for i in y_true])
    preds.insert(3, "predicted", [labels[i] for i in probs.argmax(axis=1)])
    store.write_table(sweep, "predictions", trial_id, preds, S.predictions_schema(labels))
    store.write_table(sweep, "runs", trial_id, [{
        "model": model, "scenario": scenario, "seed": seed, "lr": lr, "batch_size": 15,
        "epochs": epochs, "image_size": 64, "pretrained": False, "params": 1000,
        "epochs_run": epochs, "wall_s": 12.5, "train_images_per_s": 30.0,
        "device": "cpu (x86_64, 2 threads)", "precision": "fp32", "num_workers": 1,
        "raybench_version": "0.1.0", "torch_version": "2.x", "ray_version": "2.60.0",
        "timm_version": "1.x", "status": status}])


FOUR = ("normal", "bacteria", "viral", "covid19")
#: model -> seed -> correct per class (n = 10 per class).
SCENARIO2 = {
    "cnnx": {0: {"normal": 9, "bacteria": 8, "viral": 6, "covid19": 10},
             1: {"normal": 7, "bacteria": 8, "viral": 4, "covid19": 9}},
    "resnet18": {0: {"normal": 10, "bacteria": 9, "viral": 7, "covid19": 8},
                 1: {"normal": 10, "bacteria": 7, "viral": 7, "covid19": 10}},
}


def write_scenario2(store: ResultStore, sweep: str = "s2", scenario: str = "scenario2",
                    n: int = 10) -> None:
    """Two models x two seeds, four classes (the paper's Table 2 setting)."""
    for model, seeds in SCENARIO2.items():
        for seed, correct in seeds.items():
            write_trial(store, sweep, f"{model}-seed{seed}", model=model, seed=seed,
                        scenario=scenario, labels=FOUR, n=n, correct=correct)
