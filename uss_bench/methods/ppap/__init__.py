"""PPAP (Seong et al., ECCV 2024): progressive proxy anchor propagation.

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
