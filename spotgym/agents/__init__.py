"""Agents: the SB3 / sb3-contrib registry, training, callbacks, rollouts and the baselines to beat."""

from spotgym.agents.registry import ALGOS, make_agent, resolve_device

__all__ = ["ALGOS", "make_agent", "resolve_device"]
