"""Evaluation: the course's evaluator (precision, recall, AP), COCO's metrics, task-2 AP and
confusion, PR-curve plots, the min-face trade-off.

Imports from facecmp.data, facecmp.detection and the top-level helpers (errors, atomic) only."""
