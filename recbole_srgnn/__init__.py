"""recbole-srgnn: SR-GNN for session-based recommendation as a RecBole plugin."""

__version__ = "0.1.0"
