"""Detection: the MTCNN networks, the cascade that runs them, checkpoints, running a detector over a
dataset, the Python API (``load_detector``), ONNX export and the torch-free ONNX cascade, the peer
detectors (``peers/``) and the task-2 recognizer network.

Imports from facecmp.data and the top-level helpers (errors, atomic) only."""
