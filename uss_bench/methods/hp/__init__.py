"""HP (Seong et al., CVPR 2023): hidden positives for unsupervised semantic segmentation.

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
