"""Poisoning defences under secure aggregation: group-wise secure sums combined robustly.

``assign_groups`` (public seed -> groups), ``combine`` (median, trimmed mean, multi-Krum over group
means, with a deviation check), ``simulate_groups`` (one grouped round in process, with
``error_inflation`` against the same round with honest attackers).
"""

from secagg.robust.combine import METHODS, Combined, combine
from secagg.robust.groups import assign_groups, group_of
from secagg.robust.simulate import NEUTRALISED, GroupedReport, simulate_groups

__all__ = ["METHODS", "NEUTRALISED", "Combined", "GroupedReport", "assign_groups", "combine", "group_of",
           "simulate_groups"]
