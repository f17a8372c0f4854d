"""SAN's parts: pixel-wise encoder, semantic-wise generator, SEAT, consistency sustainer, losses."""
