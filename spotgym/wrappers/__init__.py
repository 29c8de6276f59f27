"""What wraps an env: ``ExecutionEnv`` drives the trading env through its feed and broker ports."""

from spotgym.wrappers.execution import ExecutionEnv

__all__ = ["ExecutionEnv"]
