"""HSG (Ke et al., CVPR 2022): hierarchical segment grouping.

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
