"""IIC (Ji et al., ICCV 2019): invariant information clustering on paired pixel views.

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
