"""An example third-party source kind for fsincident (``type: random_walk``)."""
