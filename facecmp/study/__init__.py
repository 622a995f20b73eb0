"""Study: the model variants compared (their registry and cache policy), the splits and the
comparison they run in (task 1, task 2, the robustness grid in ``robustness/``, the source domain,
the label budget, the min-face trade-off), its report and pictures, and the commands built on them
(``compare``, ``finetune``, ``robustness``, ``curve``, ``demo``).

Imports from data, detection, evaluation, training and the top-level helpers (errors, atomic)."""
