"""Transforms of a planned model: the channel rewrite, and recovery without training."""
