"""The policy engine: rules and kill switches in, decisions with reasons out. Pure: no I/O."""

from .engine import PolicyState, decide
from .model import Decision, KillSwitch, Rule, Target

__all__ = ["Decision", "KillSwitch", "PolicyState", "Rule", "Target", "decide"]
