"""PiCIE (Cho et al., CVPR 2021): pixel-level clustering with invariance and equivariance.

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
