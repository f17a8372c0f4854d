"""uss-bench: unsupervised semantic segmentation benchmark harness."""

__version__ = "0.1.0"
