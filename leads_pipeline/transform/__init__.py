"""Transform: the property map, parsing, derivation of leads and history, analytics SQL."""
