"""Evaluators: FLOPs and parameters, latency, proxy training and the data it trains on.

Import the heavy parts from their modules (``evaluators.proxy``, ``evaluators.data``,
``evaluators.latency``); this package only re-exports the cost counters, which the search calls
thousands of times.
"""

from evaluators.flops import Cost, breakdown, count, flops_range, thop_cost

__all__ = ["Cost", "breakdown", "count", "flops_range", "thop_cost"]
