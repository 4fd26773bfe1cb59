"""The policy engine: rules and kill switches in, decisions with reasons out. Pure: no I/O."""

from ..policy_model import Decision, KillSwitch, Rule, Target
from .engine import PolicyState, decide

__all__ = ["Decision", "KillSwitch", "PolicyState", "Rule", "Target", "decide"]
