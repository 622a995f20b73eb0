"""Study: the model variants compared, the comparison they run in, and its report.

Imports from data, detection, evaluation and training."""
