"""Sweeps on Ray Tune: search spaces around the paper's defaults, grids, resume."""
