"""Evaluators: FLOPs and parameters, latency, proxy training and the data it trains on."""

from evaluators.flops import Cost, breakdown, count, thop_cost

__all__ = ["Cost", "breakdown", "count", "thop_cost"]
