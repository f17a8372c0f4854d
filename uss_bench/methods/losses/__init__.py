"""Losses of the ViT-based methods (STEGO, HP, PPAP), each a pure function of tensors."""
