"""Wire schemas: the seed specs' shapes (platform, SDG) and Winnow's own additions.

These are never storage or engine types; services translate between them."""
