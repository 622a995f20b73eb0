"""facecmp's pytest plugin (registered through the ``pytest11`` entry point)."""

from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("facecmp", "facecmp benchmark suite")
    group.addoption("--facecmp-data", default=None, help="course archive root (default: the built-in generated dataset)")
    group.addoption("--facecmp-split", default="split:50", help="test images when the archive has no test part: split:N (N per training folder)")
    group.addoption("--facecmp-variants", default=None, help="comma-separated subset of variants to run")
    group.addoption("--facecmp-report", default=None, help="folder for report.md, results.json and plots")
    group.addoption("--facecmp-device", default="cpu", help="torch device (default cpu)")
