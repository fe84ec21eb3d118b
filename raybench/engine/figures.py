"""The figures a finished trial hands the MLflow mirror: its test confusion matrix and CAM grid.

Training owns these figures (it holds the predictions and the CAMs), so it draws them here with
:mod:`raybench.plots` and passes :func:`trial_figures` to :func:`raybench.tracking.log_trial`;
the mirror uploads what it is given and never imports the report.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from raybench.cam.export import CamExport
    from raybench.data.dataset import PreparedData
    from raybench.engine.loop import LoopResult


def confusion_counts(result: "LoopResult", data: "PreparedData") -> pd.DataFrame:
    """Test confusion counts (rows true, columns predicted) as a labelled DataFrame."""
    k = len(data.labels)
    targets = np.asarray(data.test.targets.tolist(), dtype=np.int64)
    assert result.test is not None
    predicted = result.test.probs.argmax(axis=1)
    counts = np.bincount(targets * k + predicted, minlength=k * k).reshape(k, k)
    return pd.DataFrame(counts, index=list(data.labels), columns=list(data.labels))


def trial_figures(model: str, result: "LoopResult", data: "PreparedData",
                  cams: Optional["CamExport"]) -> Callable[[Path], list[Path]]:
    """Draws ``confusion.png`` (and ``cams.png`` when CAMs were exported) into a folder, on
    call; matplotlib is imported only then, i.e. only when tracking is on."""
    def draw(folder: Path) -> list[Path]:
        from raybench import plots

        paths = [plots.save_png(plots.confusion_plot(confusion_counts(result, data), model),
                                folder / "confusion.png")]
        if cams is not None and len(cams.cams.image_ids):
            paths.append(plots.save_png(plots.cam_grid_plot({model: cams.cams}),
                                        folder / "cams.png"))
        return paths

    return draw
