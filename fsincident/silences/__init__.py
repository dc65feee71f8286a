"""Silences and inhibition: which alerts page nobody right now (the Muter the delivery stage asks)."""
