"""Evaluation: the course's evaluator (precision, recall, AP), WIDER FACE's protocol, COCO's metrics,
task-2 AP and confusion, PR-curve plots. Pure: it scores detections, it never runs a detector.

Imports from facecmp.data and the top-level helpers (errors, atomic) only: not detection."""
