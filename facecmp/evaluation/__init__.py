"""Evaluation: the course's evaluator (precision, recall, AP), PR-curve plots, the min-face trade-off.

Imports from facecmp.data and facecmp.detection only."""
