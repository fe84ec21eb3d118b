"""Throughput benchmarks, side by side in one run: raybench vs plain PyTorch, data, orchestration.

``raybench bench [--json] [--quick] [--only SECTIONS]`` runs one module per section:

* :mod:`~raybench.bench.train`: ``train_ratio``, raybench's worker loop over a plain PyTorch
  loop (:func:`paired_epochs`);
* :mod:`~raybench.bench.cache`: ``cache_speedup`` and ``cache_peak_memory_ratio``;
* :mod:`~raybench.bench.trials`: ``trial_overhead_s`` on local Ray;
* :mod:`~raybench.bench.cam`: CAM images/s per model;
* :mod:`~raybench.bench.results`: ``results_load_s`` of a sweep of 10,000 trials;
* :mod:`~raybench.bench.sweep` (only when named): ``sweep_wall_ratio`` and ``sweep_utilisation``;
* :mod:`~raybench.bench.data` (only when named): preparation on Ray (``prep_*``),
  ``near_dup_200k_s`` and ``decodes_per_image``.

:mod:`~raybench.bench.runner` runs them; its docstring says how to add a section. Performance
claims live here and in ``benchmarks/RESULTS.md``, never in timed tests.
"""
from raybench.bench.cache import bench_images, check_data, epoch_cache, epoch_decode
from raybench.bench.options import BenchOptions, Section, machine
from raybench.bench.results import (
    RESULTS_SWEEP,
    generate_results,
    result_tables,
    timed_load,
    write_result_range,
)
from raybench.bench.runner import (
    EXTRA_SECTIONS,
    SECTION_TABLE,
    SECTIONS,
    check_targets,
    format_report,
    missed_targets,
    run_bench,
)
from raybench.bench.sweep import sweep_bench_specs
from raybench.bench.train import paired_epochs, plain_epoch
from raybench.bench.trials import trial_bench_spec

__all__ = ["BenchOptions", "EXTRA_SECTIONS", "RESULTS_SWEEP", "SECTIONS", "SECTION_TABLE",
           "Section", "bench_images", "check_data", "check_targets", "epoch_cache",
           "epoch_decode", "format_report", "generate_results", "machine", "missed_targets",
           "paired_epochs",
           "plain_epoch", "result_tables", "run_bench", "sweep_bench_specs", "timed_load",
           "trial_bench_spec", "write_result_range"]
