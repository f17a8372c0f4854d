"""STEGO (Hamilton et al., ICLR 2022): distilling DINO feature correspondences into a segmentation head.

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
