"""Detection: the MTCNN networks, the cascade that runs them, checkpoints, and running a detector over a dataset.

Imports from facecmp.data and the top-level helpers (errors, atomic) only."""
