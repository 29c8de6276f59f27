"""Agents: who decides. The SB3 / sb3-contrib registry (build, load), the actors that turn a model or a rule
into actions, the training callbacks and the baseline rules the agent must beat."""

from spotgym.agents.actors import cash_actor, model_actor, target_actor
from spotgym.agents.baselines import baseline_targets
from spotgym.agents.ensemble import EnsembleActor, EnsembleConfig, rule_actor
from spotgym.agents.registry import ALGOS, algo_spec, load_model, make_agent, resolve_device

__all__ = ["ALGOS", "EnsembleActor", "EnsembleConfig", "algo_spec", "baseline_targets", "cash_actor", "load_model",
           "make_agent", "model_actor", "resolve_device", "rule_actor", "target_actor"]
