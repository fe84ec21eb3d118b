"""raybench's version, in a leaf module: the modules that record it (run rows, the GPU probe's
cache key, a library model's version) import it without importing the package's notebook API."""
__version__ = "0.1.0"
