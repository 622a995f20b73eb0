"""The detection-time forward passes equal the reference modules' forward."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from facecmp.detection.fastforward import FAST_FORWARD, _ChannelsLastPReLU, max_pool_ceil
from facecmp.detection.models import INPUT_SIZE, pretrained_network


@settings(max_examples=60, deadline=None)
@given(
    kernel_stride=st.sampled_from([(2, 2), (3, 2), (3, 1), (2, 1), (3, 3)]),
    height=st.integers(3, 20),
    width=st.integers(3, 20),
    channels=st.integers(1, 20),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_ceil_equals_torch(kernel_stride, height, width, channels, channels_last, seed):
    kernel, stride = kernel_stride
    x = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(seed))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours = max_pool_ceil(x, kernel, stride)
    assert torch.equal(ours, F.max_pool2d(x, kernel, stride, ceil_mode=True))
    if channels_last:
        assert ours.is_contiguous(memory_format=torch.channels_last)


def test_max_pool_ceil_rejects_gapped_windows():
    with pytest.raises(ValueError, match="kernel must be >= stride"):
        max_pool_ceil(torch.zeros(1, 1, 8, 8), 2, 3)


@pytest.mark.parametrize("channels", [10, 16, 28])
@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_prelu_equals_torch(channels, channels_last):
    prelu = torch.nn.PReLU(channels)
    with torch.no_grad():
        prelu.weight.copy_(torch.linspace(-1.0, 1.0, channels))  # negative slopes included
    fast = _ChannelsLastPReLU(prelu)
    for width in (7, 9, 7):  # a new width, then a cached one
        x = torch.randn(3, channels, 5, width)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            assert torch.equal(fast(x), prelu(x))


def _randomized(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy with every weight perturbed, PReLU slopes of both signs: a stand-in for a fine-tuned net."""
    net = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return net


def _input(stage: str) -> torch.Tensor:
    size = INPUT_SIZE[stage]
    shape = (2, 3, 37, 53) if stage == "pnet" else (9, 3, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)


def _net(stage: str, weights: str) -> torch.nn.Module:
    net = pretrained_network(stage)
    if weights == "perturbed":
        net = _randomized(net, seed=1)
    return net.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("weights", ["pretrained", "perturbed"])
@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 3, 55, 73), (1, 3, 14, 19)])  # the last two: oneDNN / native convs
def test_fast_pnet_equals_module(weights, shape):
    net = _net("pnet", weights)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    fast = FAST_FORWARD["pnet"](net)
    with torch.inference_mode():
        offsets, probs = net(x)
        features, face = fast(x)
        torch.testing.assert_close(face, probs[:, 1], rtol=0, atol=1e-5)
        cells = torch.ones_like(face, dtype=torch.bool).nonzero()  # every cell, in map order
        torch.testing.assert_close(fast.offsets(features, cells), offsets.permute(0, 2, 3, 1).reshape(-1, 4), rtol=1e-4, atol=1e-4)
        some = cells[::7]
        torch.testing.assert_close(fast.offsets(features, some), offsets[some[:, 0], :, some[:, 1], some[:, 2]], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stage", ["rnet", "onet"])
@pytest.mark.parametrize("weights", ["pretrained", "perturbed"])
def test_fast_rnet_onet_equal_module(stage, weights):
    net, x = _net(stage, weights), _input(stage)
    with torch.inference_mode():
        *expected_rest, expected_probs = net(x)
        *got_rest, got_probs = FAST_FORWARD[stage](net)(x)
    torch.testing.assert_close(got_probs, expected_probs[:, 1], rtol=0, atol=1e-5)
    for got, expected in zip(got_rest, expected_rest):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
