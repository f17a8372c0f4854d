"""SAN (AAAI 2023): semantic attention network (from the paper; no official code).

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
