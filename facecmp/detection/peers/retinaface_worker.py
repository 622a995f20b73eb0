"""RetinaFace (MobileNetV2 backbone, the ``retinaface==1.1.1`` wheel's TensorFlow frozen graph) in
its own environment: run by ``peers.retinaface_tf`` with a Python that has ``tensorflow-cpu`` and
``retinaface`` (installed ``--no-deps``: its metadata pins tf 2.5, streamlit and opencv 4.6).
Standalone: imports numpy and tensorflow only, never facecmp, and not the wheel's own module (it
needs cv2 and numpy's removed ``np.int``): the graph is loaded from the package folder, and the
wheel's pre- and post-processing is redone here.

``python retinaface_worker.py SIDE MIN_SCORE``: the longer side is resized to SIDE px (0: the
image as it is; the wheel's "normal" quality is 800), padded to a multiple of 32; every face
scoring at least MIN_SCORE is answered with its 5 landmarks. The protocol is ``worker_protocol``'s.
"""

import sys

from worker_protocol import serve, standalone

standalone()

STEP = 32  # the graph's input must be a multiple of this


def load():
    side, min_score = int(sys.argv[1]), float(sys.argv[2])
    import importlib.util
    import os

    spec = importlib.util.find_spec("retinaface")
    if spec is None:
        raise ModuleNotFoundError("retinaface", name="retinaface")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    graph_file = os.path.join(spec.submodule_search_locations[0], "src", "frozen_graph.pb")
    with tf.io.gfile.GFile(graph_file, "rb") as f:
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(f.read())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    model = wrapped.prune(wrapped.graph.as_graph_element("x:0"), wrapped.graph.as_graph_element("Identity:0"))

    def detect(image):
        height, width = image.shape[:2]
        x = tf.convert_to_tensor(image, tf.float32)
        if side and max(height, width) != side:
            scale = side / max(height, width)
            x = tf.image.resize(x, (max(1, int(height * scale)), max(1, int(width * scale))))
        h, w = int(x.shape[0]), int(x.shape[1])
        padded = tf.pad(x, [[0, -h % STEP], [0, -w % STEP], [0, 0]])
        # one row per face: x1, y1, x2, y2 and 5 (x, y) landmarks as fractions of the padded image, ..., score
        out = model(padded[tf.newaxis]).numpy().reshape(-1, 16)
        out = out[out[:, 15] >= min_score]
        points = out[:, :14].reshape(-1, 7, 2) * np.array([w + (-w % STEP), h + (-h % STEP)], np.float32)
        points *= np.array([width / w, height / h], np.float32)
        boxes = points[:, :2].reshape(-1, 4)
        boxes[:, 2:] -= 1  # inclusive pixels
        return boxes.tolist(), out[:, 15].tolist(), points[:, 2:].tolist()

    return detect, tf.__version__


if __name__ == "__main__":
    sys.exit(serve(load))
