"""BlazeFace in its own environment: run by ``peers.blazeface`` with a Python that has
``mediapipe==0.10.14`` (which needs protobuf<5, jax and opencv-contrib-python: it cannot share
facecmp's environment). Standalone: imports numpy and mediapipe only, never facecmp.

Protocol over stdin/stdout (binary in, one JSON line out per image):
``python mediapipe_worker.py MODEL_SELECTION MIN_CONFIDENCE`` prints ``{"ready": version}``, then
reads an 8-byte header (uint32 height, width, little-endian) and ``height * width * 3`` RGB bytes
per image and answers ``{"boxes": [[x1, y1, x2, y2], ...], "scores": [...]}`` (pixels, inclusive);
a header of height 0 ends it.
"""

import json
import os
import struct
import sys


def main() -> int:
    model_selection, min_confidence = int(sys.argv[1]), float(sys.argv[2])
    # The protocol owns the real stdout; anything mediapipe prints goes to stderr.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = sys.stdin.buffer

    import mediapipe as mp
    import numpy as np

    detector = mp.solutions.face_detection.FaceDetection(model_selection=model_selection, min_detection_confidence=min_confidence)
    protocol.write(json.dumps({"ready": mp.__version__}) + "\n")
    while True:
        header = stdin.read(8)
        if len(header) < 8:
            return 0
        height, width = struct.unpack("<II", header)
        if height == 0:
            return 0
        image = np.frombuffer(stdin.read(height * width * 3), np.uint8).reshape(height, width, 3)
        result = detector.process(image)
        boxes, scores = [], []
        for d in result.detections or ():
            b = d.location_data.relative_bounding_box
            x1, y1 = b.xmin * width, b.ymin * height
            boxes.append([x1, y1, x1 + b.width * width - 1, y1 + b.height * height - 1])
            scores.append(float(d.score[0]))
        protocol.write(json.dumps({"boxes": boxes, "scores": scores}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
