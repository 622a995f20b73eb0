"""BlazeFace in its own environment: run by ``peers.blazeface`` with a Python that has
``mediapipe==0.10.14`` (which needs protobuf<5, jax and opencv-contrib-python: it cannot share
facecmp's environment). Standalone: imports numpy and mediapipe only, never facecmp.

``python mediapipe_worker.py MODEL_SELECTION MIN_CONFIDENCE``; the protocol is ``worker_protocol``'s.
"""

import sys

from worker_protocol import serve, standalone

standalone()


def load():
    model_selection, min_confidence = int(sys.argv[1]), float(sys.argv[2])
    import mediapipe as mp

    detector = mp.solutions.face_detection.FaceDetection(model_selection=model_selection, min_detection_confidence=min_confidence)

    def detect(image):
        height, width = image.shape[:2]
        result = detector.process(image)
        boxes, scores = [], []
        for d in result.detections or ():
            b = d.location_data.relative_bounding_box
            x1, y1 = b.xmin * width, b.ymin * height
            boxes.append([x1, y1, x1 + b.width * width - 1, y1 + b.height * height - 1])
            scores.append(float(d.score[0]))
        return boxes, scores, None

    return detect, mp.__version__


if __name__ == "__main__":
    sys.exit(serve(load))
