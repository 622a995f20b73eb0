"""nagadomi's anime face detector (``animeface==2.0.3``, Apache-2.0, weights in its ``.so``) in its
own environment: run by ``peers.animeface_nvxs`` with a Python that has ``animeface`` and
``Pillow<=11.3``. On Pillow 12 or 13 it returns no face at all, on any image, without an error:
so this worker refuses to start there (a "broken" answer naming the version), and facecmp also
fails a run where a detector finds nothing on a whole set that has faces.
Standalone: imports numpy, PIL and animeface only, never facecmp.

``python animeface_worker.py MIN_LIKELIHOOD``: every face whose likelihood reaches it, with five
points (its eye boxes' centres, the nose, the mouth box's left and right ends). The protocol is
``worker_protocol``'s.
"""

import sys

from worker_protocol import serve, standalone

standalone()

MAX_PILLOW = (11, 3)  # the last Pillow it answers on


def load():
    min_likelihood = float(sys.argv[1])
    import PIL
    from PIL import Image

    version = tuple(int(v) for v in PIL.__version__.split(".")[:2])
    if version > MAX_PILLOW:
        raise RuntimeError(f"animeface answers nothing on Pillow {PIL.__version__} (it needs Pillow<=11.3)")
    import animeface

    def detect(image):
        faces = animeface.detect(Image.fromarray(image))
        boxes, scores, points = [], [], []
        for face in faces:
            if face.likelihood < min_likelihood:
                continue
            b = face.face.pos
            boxes.append([b.x, b.y, b.x + b.width - 1, b.y + b.height - 1])
            scores.append(float(face.likelihood))
            le, re, m = face.left_eye.pos, face.right_eye.pos, face.mouth.pos
            points.append([
                [le.x + le.width / 2, le.y + le.height / 2], [re.x + re.width / 2, re.y + re.height / 2],
                [face.nose.pos.x, face.nose.pos.y], [m.x, m.y + m.height / 2], [m.x + m.width, m.y + m.height / 2],
            ])
        return boxes, scores, points

    return detect, f"animeface {getattr(animeface, '__version__', '2.0.3')}, Pillow {PIL.__version__}"


if __name__ == "__main__":
    sys.exit(serve(load))
