"""Detection-time forward passes of the three networks: same outputs, less CPU time.

The modules in ``models.py`` stay the readable reference (and what training runs). Detection
runs the same layers, with steps replaced by equivalents that are faster on channels-last maps
(one thread; profile with ``python benchmarks/profile_cascade.py``):

* Max pooling is a ``torch.maximum`` chain over strided views of the map instead of PyTorch's
  pooling kernel, which is slow on channels-last maps whose channel count is not a multiple of
  16: PNet's first pool 0.70 -> 0.15 ms on the largest pyramid level, RNet's first pool on
  96 crops 0.71 -> 0.25 ms, ONet's ~2x. Bit-identical (a max is a max).
* PReLU on maps with such channel counts (PNet's 10, RNet's 28) goes through PyTorch's 2-D
  PReLU kernel with the slopes tiled along the row: 0.63 -> 0.05 ms on PNet's first map,
  bit-identical too.
* PNet's heads: the probability from one dot product per cell, the box offsets only where the
  detector asks for them (``FastPNet``).
* Mid-sized single-image convolutions go to oneDNN, which PyTorch's heuristic skips (``_conv``).

Outputs are what the detector uses: the face probability (``probs[:, 1]`` of ``net(x)``) and the
box offsets (and ONet's landmarks), equal to the modules' to float rounding (tests/test_fastforward.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def max_pool_ceil(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """``F.max_pool2d(x, kernel, stride, ceil_mode=True)`` (no padding), from strided views.

    Rows first, then columns. Keeps ``x``'s memory layout (channels-last in, channels-last out).
    """
    if kernel < stride:
        raise ValueError("kernel must be >= stride (every window then starts inside the map)")
    height, width = x.shape[-2:]
    out_h = -(-(height - kernel) // stride) + 1
    out_w = -(-(width - kernel) // stride) + 1
    return _max_along(_max_along(x, kernel, stride, out_h, dim=2), kernel, stride, out_w, dim=3)


def _max_along(x: torch.Tensor, kernel: int, stride: int, n_out: int, dim: int) -> torch.Tensor:
    """Max over windows ``[j * stride, j * stride + kernel)`` along ``dim``, for j < n_out.

    In ceil mode the last window may run past the edge: an offset that falls outside it
    updates only the windows before it (no padding copy of the whole map).
    """
    size = x.shape[dim]
    every = (slice(None),) * dim + (slice(None, None, stride),)
    out, owned = x.narrow(dim, 0, (n_out - 1) * stride + 1)[every], False
    for offset in range(1, kernel):
        n = min(n_out, (size - 1 - offset) // stride + 1)
        view = x.narrow(dim, offset, (n - 1) * stride + 1)[every]
        if n == n_out:
            out, owned = torch.maximum(out, view), True
            continue
        if not owned:  # still a view of x: copy before writing into it
            out, owned = out.clone(memory_format=torch.preserve_format), True
        head = out.narrow(dim, 0, n)
        torch.maximum(head, view, out=head)
    return out


class _ChannelsLastPReLU:
    """``prelu(x)`` for a channels-last map, through PyTorch's 2-D PReLU kernel.

    PyTorch's PReLU is slow on channels-last maps whose channel count is not a multiple of 16
    (0.63 ms for PNet's first 10-channel map). Seen as a matrix of ``H`` rows of ``W x C``
    values, with the slopes tiled ``W`` times, the same kernel runs vectorized (0.05 ms) and
    computes the same products.
    """

    def __init__(self, prelu: nn.PReLU):
        self.prelu = prelu
        self.tiled: dict[int, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c % 16 == 0 or not x.is_contiguous(memory_format=torch.channels_last):
            return self.prelu(x)
        if w not in self.tiled:
            if len(self.tiled) >= 256:  # maps of many widths (images of many sizes): start over
                self.tiled.clear()
            self.tiled[w] = self.prelu.weight.detach().repeat(w)
        rows = x.permute(0, 2, 3, 1).reshape(n * h, w * c)
        return F.prelu(rows, self.tiled[w]).view(n, h, w, c).permute(0, 3, 1, 2)


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")


def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, with mid-sized single-image CPU maps sent to oneDNN directly.

    PyTorch gives a batch of one image with at most 20,480 values to its native kernel instead
    of oneDNN; on channels-last maps that is 2-4x slower (PNet's conv1 on a 55x73 pyramid level:
    180 -> 77 us inside the cascade). Below ~8,000 values the native kernel is as fast or faster.
    """
    if _ONEDNN and x.device.type == "cpu" and x.shape[0] == 1 and 8192 <= x.numel() <= 20480:
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv(x)


def _pool_args(pool: nn.MaxPool2d) -> tuple[int, int]:
    def first(v):
        return v[0] if isinstance(v, tuple) else v

    return first(pool.kernel_size), first(pool.stride)


class FastPNet:
    """PNet for detection: the face probability at every cell, box offsets only where asked.

    Of PNet's two 1x1 heads, the probability needs only ``softmax([a0, a1])[1] ==
    sigmoid(a1 - a0)``: one dot product per cell with the difference of the two weight rows
    (equal to the softmax to ~1e-7). The 4 box offsets are computed just for the cells that
    pass the threshold and NMS, usually a few dozen out of tens of thousands: the heads drop
    from 0.30 to 0.04 ms on the largest pyramid level.
    """

    def __init__(self, net: nn.Module):
        self.net = net
        self.prelu1 = _ChannelsLastPReLU(net.prelu1)
        self.pool1 = _pool_args(net.pool1)
        weight, bias = net.conv4_1.weight.detach().flatten(1), net.conv4_1.bias.detach()
        self.face_weight, self.face_bias = weight[1] - weight[0], bias[1] - bias[0]
        self.offset_weight, self.offset_bias = net.conv4_2.weight.detach().flatten(1), net.conv4_2.bias.detach()

    def __call__(self, x: torch.Tensor):
        """``(features (B, h, w, 32), face_probability (B, h, w))`` for images ``x``."""
        n = self.net
        x = max_pool_ceil(self.prelu1(_conv(n.conv1, x)), *self.pool1)
        x = n.prelu3(_conv(n.conv3, n.prelu2(_conv(n.conv2, x))))
        features = x.permute(0, 2, 3, 1)  # (B, h, w, C): a view when x is channels-last
        logit = torch.mv(features.reshape(-1, features.shape[-1]), self.face_weight).add_(self.face_bias)
        return features, torch.sigmoid(logit).view(features.shape[:3])

    def offsets(self, features: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Box offsets ``(M, 4)`` at ``cells`` ``(M, 3)`` = (image, row, column)."""
        rows = features[cells[:, 0], cells[:, 1], cells[:, 2]]
        return F.linear(rows, self.offset_weight, self.offset_bias)


class FastRNet:
    """RNet for detection: ``(box_offsets (N, 4), face_probability (N,))``."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.prelu1 = _ChannelsLastPReLU(net.prelu1)
        self.pool1, self.pool2 = _pool_args(net.pool1), _pool_args(net.pool2)

    def __call__(self, x: torch.Tensor):
        n = self.net
        x = max_pool_ceil(self.prelu1(n.conv1(x)), *self.pool1)
        x = max_pool_ceil(n.prelu2(n.conv2(x)), *self.pool2)
        x = n.prelu3(n.conv3(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)  # Caffe flattening order, as in RNet
        x = n.prelu4(n.dense4(x))
        return n.dense5_2(x), torch.softmax(n.dense5_1(x), dim=1)[:, 1]


class FastONet:
    """ONet for detection: ``(box_offsets (N, 4), landmarks (N, 10), face_probability (N,))``."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.pools = [_pool_args(p) for p in (net.pool1, net.pool2, net.pool3)]

    def __call__(self, x: torch.Tensor):
        n = self.net
        x = max_pool_ceil(n.prelu1(n.conv1(x)), *self.pools[0])
        x = max_pool_ceil(n.prelu2(n.conv2(x)), *self.pools[1])
        x = max_pool_ceil(n.prelu3(n.conv3(x)), *self.pools[2])
        x = n.prelu4(n.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)  # Caffe flattening order, as in ONet
        x = n.prelu5(n.dense5(x))
        return n.dense6_2(x), n.dense6_3(x), torch.softmax(n.dense6_1(x), dim=1)[:, 1]


FAST_FORWARD = {"pnet": FastPNet, "rnet": FastRNet, "onet": FastONet}
