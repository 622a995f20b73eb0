"""The robustness study: every variant on clean and corrupted test frames (``facecmp robustness``).

The conditions (``conditions``: the common corruptions, scale, mirror), the reference corruption
package made to run on today's stack (``compat``), our exact copies of its two slowest blurs
(``blurs``), the geometric conditions' pixels and boxes (``geometric``), a condition applied to a
frame (``apply``); a grid cell and its cache (``cells``), the grid runner (``grid``), the metrics
P_clean / mPC / rPC (``metrics``), the report (``report``) and the command's entry point (``run``).
"""
