"""The three MTCNN networks.

Layer names are a public contract: the state-dict keys equal facenet-pytorch's
(``conv1``, ``prelu1``, ..., ``conv4_1``, ``conv4_2`` for PNet; ``dense4``, ``dense5_1``, ...
for RNet; ``dense5``, ``dense6_1``, ... for ONet), so weights move both ways:
``facenet_pytorch.MTCNN().pnet.load_state_dict(torch.load("pnet.pt"))`` works on ours.

Each ``forward`` returns ``(box_offsets, face_probabilities[, landmarks])`` as facenet-pytorch's
does. ``logits=True`` returns the pre-softmax scores instead, which training needs for a
numerically stable cross-entropy.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
from torch import nn

from facecmp.errors import ModelError

STAGES = ("pnet", "rnet", "onet")
# Side of the square input each stage classifies (PNet is fully convolutional: 12 is its receptive field).
INPUT_SIZE = {"pnet": 12, "rnet": 24, "onet": 48}


class PNet(nn.Module):
    """Proposal network: fully convolutional, one 12x12 window per output cell (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor, logits: bool = False):
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        a = self.conv4_1(x)
        b = self.conv4_2(x)
        return b, (a if logits else self.softmax4_1(a))


class RNet(nn.Module):
    """Refinement network: classifies 24x24 crops and regresses their box."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor, logits: bool = False):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe, which flattens (W, H, C): keep that order.
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        a = self.dense5_1(x)
        b = self.dense5_2(x)
        return b, (a if logits else self.softmax5_1(a))


class ONet(nn.Module):
    """Output network: classifies 48x48 crops, regresses their box and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor, logits: bool = False):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # Caffe flattening order, as in RNet
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        a = self.dense6_1(x)
        b = self.dense6_2(x)
        c = self.dense6_3(x)
        return b, c, (a if logits else self.softmax6_1(a))


NETWORKS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def pretrained_weights_dir() -> Path:
    """Folder holding facenet-pytorch's ``pnet.pt``, ``rnet.pt``, ``onet.pt``.

    Found through the installed package's location without importing it: importing
    facenet_pytorch pulls in requests and its own pinned expectations, which we do not need.
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The pretrained MTCNN weights come from the facenet-pytorch package, which is not "
            "installed. Install it without its outdated pins:\n"
            "    pip install --no-deps facenet-pytorch==2.6.0\n"
            "(or run `make install`, which does this)."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [f"{s}.pt" for s in STAGES if not (folder / f"{s}.pt").is_file()]
    if missing:
        raise ModelError(
            f"facenet-pytorch is installed but {folder} lacks {', '.join(missing)}. "
            "Reinstall it: pip install --no-deps --force-reinstall facenet-pytorch==2.6.0"
        )
    return folder


def pretrained_weights_digest() -> str | None:
    """Hash of facenet-pytorch's three weight files (None when the package is absent): in the key
    of every cached result that starts from or runs the pretrained networks."""
    from facecmp.data.fingerprint import files_digest

    try:
        folder = pretrained_weights_dir()
    except ModelError:
        return None
    return files_digest(folder / f"{s}.pt" for s in STAGES)


def _one_line(exc: Exception) -> str:
    """``torch.load``'s reason in one line (its message is a paragraph of advice around it)."""
    lines = [ln.strip().removeprefix("WeightsUnpickler error:").strip() for ln in str(exc).splitlines()]
    useful = [ln for ln in lines[1:] if ln and not ln.startswith(("Check the documentation", "Please file an issue"))]
    return " ".join(useful) or (lines[0] if lines and lines[0] else type(exc).__name__)


def load_plain(path: str | Path, what: str, remedy: str, error: type[Exception] = ModelError):
    """``torch.load`` of tensors and plain values only (``weights_only=True``): a file that would run code
    when unpickled is refused, as is any unreadable one, with one line naming it, ``what`` it should
    be and ``remedy``."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found; {remedy}") from None
    except Exception as exc:  # corrupt, truncated, not a PyTorch file, or objects beyond tensors and plain values
        refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise error(f"{path}: refused: it holds more than tensors and plain values (it would call the Python object "
                        f"{refused.group(1)}); facecmp loads PyTorch files with weights_only=True so that a file cannot "
                        f"run code; {remedy}") from None
        raise error(f"{path}: not a readable {what} ({_one_line(exc)}); {remedy}") from None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    return load_plain(path, "PyTorch state dict", "re-save the weights with torch.save(net.state_dict(), path)")


def build_network(stage: str, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A network for ``stage`` in eval mode, with ``state_dict`` loaded when given."""
    if stage not in NETWORKS:
        raise ModelError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    net = NETWORKS[stage]()
    if state_dict is not None:
        try:
            net.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise ModelError(f"weights do not fit {stage}: {exc}") from None
    return net.eval()


def pretrained_network(stage: str) -> nn.Module:
    """``stage`` with facenet-pytorch's pretrained weights."""
    return build_network(stage, load_state_dict(pretrained_weights_dir() / f"{stage}.pt"))
