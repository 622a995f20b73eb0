"""The labelling formats facecmp reads and writes, found from the files present or named.

``course`` (the course archive, :mod:`facecmp.data.layout`), ``coco``, ``voc``, ``yolo`` and
``wider`` (WIDER FACE). Every reader maps to the same records (:mod:`facecmp.data.records`) with
the course's box policy and error policy: each problem names its file and line or object, boxes
outside the image are clipped (one warning per kind of change, with the count), image names that
are absolute or climb with ``..`` are refused, and every problem is listed at once before a
loader raises. A dataset has a training part, a test part, or both (``train`` / ``val`` / ``test``
in the names of files or folders; a single unnamed part is the training part).

Each module here is one format: ``NAME``, ``find(root)``, ``read(root)`` and ``write(parts, out)``.
The dispatch over them (:mod:`facecmp.data.archive`: which format a folder holds, every command's
``--data``) and :mod:`facecmp.data.convert` (one written as another) sit above this package;
nothing here imports them.
"""
