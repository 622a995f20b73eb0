"""IoU non-maximum suppression per image, on torchvision's compiled NMS kernel.

``import torchvision`` costs about a second per process (``torchvision.ops`` pulls in
``torch._dynamo``), a third of a short ``facecmp detect`` run, so the detector loads only
torchvision's compiled extension and calls its ``nms`` op. ``batched_nms`` follows
``torchvision.ops.batched_nms`` (coordinate offsets for small inputs, one NMS per image for
large ones) so that the same boxes survive. If the extension cannot be found this way, the
regular ``torchvision.ops`` functions are used.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

# torchvision switches strategy at this many box coordinates on CPU.
_VANILLA_ABOVE = 4000


@functools.lru_cache(maxsize=1)
def _nms_kernel():
    spec = importlib.util.find_spec("torchvision")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        for lib in sorted(folder.glob("_C*.so")):
            try:
                torch.ops.load_library(str(lib))
                return torch.ops.torchvision.nms
            except (OSError, RuntimeError, AttributeError):
                continue
    from torchvision.ops import nms

    return nms


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the kept boxes, in decreasing score order."""
    return _nms_kernel()(boxes, scores, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS independently within each ``idxs`` group (image); kept indices in decreasing score order."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.numel() > _VANILLA_ABOVE:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for group in torch.unique(idxs):
            members = torch.where(idxs == group)[0]
            keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    # Shift each group's boxes so that groups cannot overlap, then one NMS call.
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)
