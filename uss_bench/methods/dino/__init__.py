"""The DINO baseline: frozen DINO features with the engine's probes; no loss of its own.

Layout (README, "Adding a method"): ``method.py`` is the adapter, ``loss.py`` its losses as pure
functions, other modules hold its remaining parts."""
