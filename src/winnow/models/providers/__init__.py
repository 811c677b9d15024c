"""Built-in providers. They register through the ``winnow.providers`` entry-point group, as plugins do."""
