"""modellens-jax: learn from leaderboard records which pretrained model will do best on a dataset."""

__version__ = "0.1.0"
