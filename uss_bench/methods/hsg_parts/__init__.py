"""HSG's parts: over-segmentations, multiview augmentation, segments, clustering transformers, losses."""
