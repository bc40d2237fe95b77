"""What an agent is to the runtime: state plus synchronous handlers that return effects.

Handlers never block and never await: anything that must wait (a payment, a remote query) is an
effect the runtime performs in its own task, delivering the outcome back as a message. The same
agent objects therefore run unchanged on both engines (``task`` and ``shard``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec
import numpy as np

from negotiator.messages import AnyMessage, Invoice, Side


class Position(msgspec.Struct, frozen=True, gc=False):
    """What an agent wants to trade in a slot, as it advertises it on the board."""

    agent: int
    side: Side
    quantity: int
    """Base units (Wh for energy) the agent wants to buy or sell; positive."""
    reservation: int
    """Worst acceptable price (msat per 1,000 units): the most a buyer pays, the least a seller takes."""
    agent_type: str
    resource: str


class Pay(msgspec.Struct, frozen=True, gc=False):
    """Effect: pay ``invoice`` for negotiation ``nid`` from the agent's node."""

    nid: int
    payer: int
    invoice: Invoice

    @property
    def sender(self) -> int:
        """Who asks: the router checks it is the agent whose handler returned the effect."""
        return self.payer


class Skip(msgspec.Struct, frozen=True, gc=False):
    """Effect: the initiator declines to open negotiation ``nid`` (nothing left to trade)."""

    nid: int
    agent: int

    @property
    def sender(self) -> int:
        """Who declines: the router checks it is the agent whose handler returned the effect."""
        return self.agent


Effect = AnyMessage | Pay | Skip
"""A message to send (routed to its receiver), or an instruction to the runtime."""


class Agent(Protocol):
    """An actor: the runtime serialises calls, so handlers need no locks."""

    @property
    def address(self) -> int:
        """The agent's address on the bus."""
        ...

    @property
    def agent_type(self) -> str:
        """A bounded label (``consumer``, ``prosumer``...) used for statistics and metrics."""
        ...

    def open_slot(self, slot: int, view: object) -> Position | None:
        """A slot opens: observe the market ``view`` and say what to trade, or None to sit out."""
        ...

    def handle(self, message: AnyMessage, now: float) -> Sequence[Effect]:
        """Turn one message into effects; raise ProtocolViolation for illegal messages."""
        ...

    def close_slot(self, slot: int) -> None:
        """Gate closure: whatever is untraded goes to the outside option (e.g. the grid)."""
        ...


class Pairing(msgspec.Struct, frozen=True, gc=False):
    """A buyer and a seller the matcher put together; the initiator opens the negotiation."""

    initiator: int
    responder: int
    side: Side
    """The initiator's side."""
    quantity: int
    """The responder's advertised quantity."""


Matcher = Callable[[int, Sequence[Position], object, np.random.Generator], list[Pairing]]
"""``(slot, positions, view, rng) -> pairings``: who negotiates with whom this slot."""
