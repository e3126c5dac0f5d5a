"""Plugin models, by the name ``run.py`` resolves before RecBole's built-ins."""

MODELS: dict = {}
