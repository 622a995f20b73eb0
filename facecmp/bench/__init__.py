"""Bench: the pytest plugin (benchmark session, gates) and whole-process timing.

Imports from every layer below; nothing imports from here. Loading the plugin imports neither torch nor matplotlib."""
