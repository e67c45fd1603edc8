"""Project scripts; ``python -m scripts.stress`` runs the long fault and kill trials."""
