"""Source kinds, one module each, registered through the ``fsincident.sources`` entry points."""
