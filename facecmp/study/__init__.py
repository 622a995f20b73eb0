"""Study: the model variants compared, the comparison they run in (task 1, task 2, robustness), and
its report and pictures.

Imports from data, detection, evaluation, training and the top-level helpers (errors, atomic)."""
