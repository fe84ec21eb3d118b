"""Datasets: manifests, importers, synthetic images."""
