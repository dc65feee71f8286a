"""Benchmarks of the real daemon process; ``python benchmarks/run.py`` runs them all."""
