"""pct_pipeline: regression-free model upgrades with cached teacher logits."""

__version__ = "0.1.0"
