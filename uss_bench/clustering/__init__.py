"""Clustering utilities shared by several methods and protocols (k-means, spherical k-means)."""
