"""The loop every peer worker runs in its own environment (standalone: numpy and json only, never
facecmp, which that environment does not have). ``peers.environment`` is the other end.

Protocol over stdin/stdout (binary in, one JSON line out per image): the worker first prints one
line, ``{"ready": version}``, ``{"missing": module}`` (its package is not installed there) or
``{"broken": message}`` (it is, but loading failed); then it reads an 8-byte header (uint32 height,
width, little-endian) and ``height * width * 3`` RGB bytes per image and answers
``{"boxes": [[x1, y1, x2, y2], ...], "scores": [...], "landmarks": [[x, y] * 5, ...] or null}``
(pixels, inclusive); a header of height 0 ends it.
"""

import json
import os
import struct
import sys


def serve(load) -> int:
    """``load()`` -> ``(detect, version)``, where ``detect(image)`` returns ``(boxes, scores, landmarks)``."""
    # The protocol owns the real stdout; anything the model's library prints goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = sys.stdin.buffer
    try:
        detect, version = load()
        import numpy as np
    except ModuleNotFoundError as exc:
        protocol.write(json.dumps({"missing": exc.name or str(exc)}) + "\n")
        return 3
    except Exception as exc:  # noqa: BLE001  (any failure is reported to the client, one line)
        protocol.write(json.dumps({"broken": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 4
    protocol.write(json.dumps({"ready": version}) + "\n")
    while True:
        header = stdin.read(8)
        if len(header) < 8:
            return 0
        height, width = struct.unpack("<II", header)
        if height == 0:
            return 0
        image = np.frombuffer(stdin.read(height * width * 3), np.uint8).reshape(height, width, 3)
        boxes, scores, landmarks = detect(image)
        protocol.write(json.dumps({"boxes": boxes, "scores": scores, "landmarks": landmarks}) + "\n")


def standalone() -> None:
    """Called by a worker script after importing this module: its own folder (facecmp's peers,
    whose module names may shadow the model's package) leaves ``sys.path``."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
