"""Channel kinds, registered through the ``fsincident.notifiers`` entry points."""
