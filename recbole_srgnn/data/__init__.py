"""Data preparation: Retail Rocket conversion, pre-split import, synthetic data, dataset registry."""
