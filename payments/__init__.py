"""Settlement rails: the in-process rail (and, in later work, the simulated and real Lightning)."""

from payments.inprocess import InProcessRail

__all__ = ["InProcessRail"]
