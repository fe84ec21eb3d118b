"""raybench: reproducible, distributed CNN benchmarks on chest X-rays, with CAM explanations."""
__version__ = "0.1.0"
