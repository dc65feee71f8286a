"""Routing: which targets and grouping an alert's labels select (pure)."""
