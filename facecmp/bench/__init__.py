"""Bench: the pytest plugin (benchmark session, accuracy and speed gates and the gates file's audit,
the robustness and task-2 axes) and whole-process timing.

Imports from data, detection, training, study and the top-level helpers (errors, process); nothing
imports from here. Loading the plugin imports neither torch nor matplotlib."""
