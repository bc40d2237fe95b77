"""One negotiation in flight, as the runtime sees it: the router's record of who is in it, whose
turn it is, what is on the table, and when it began, opened and must end."""

from __future__ import annotations

from typing import Any, Final

from negotiator.messages import Side

_BUY: Final = Side.BUY  # a global, not an enum attribute read, per negotiation (Python 3.11)


class Flight:
    """One negotiation in flight, as the runtime sees it."""

    __slots__ = (
        "begun",
        "buyer",
        "deadline",
        "initiator",
        "nid",
        "opened",
        "quantity",
        "responder",
        "seller",
        "side",
        "slot",
        "started",
        "terms",
        "turn",
    )

    def __init__(
        self,
        nid: int,
        slot: int,
        initiator: int,
        responder: int,
        side: Side,
        quantity: int,
        deadline: float,
    ) -> None:
        self.nid = nid
        self.side = side
        self.quantity = quantity
        self.slot = slot
        self.initiator = initiator
        self.responder = responder
        self.buyer, self.seller = (initiator, responder) if side is _BUY else (responder, initiator)
        self.deadline = deadline
        self.begun = 0.0
        """When the runtime opened it (Start queued for the initiator)."""
        self.opened = 0.0
        """When the first offer was relayed."""
        self.started = False
        """Whether its Start has gone to the initiator (see :attr:`Router.max_under_way`)."""
        self.turn = initiator
        """Who must move next: the runtime referees turns, not only the receiving agent."""
        self.terms: Any = None
        """The offer on the table (the last Propose or Counter relayed): what an Accept accepts."""


__all__ = ["Flight"]
