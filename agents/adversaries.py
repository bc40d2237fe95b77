"""Byzantine traders: what a malicious member of the market can try, one behaviour each.

Each is a :class:`Trader` that trades honestly apart from its attack, so that it stays in the
market (advertises, gets matched, negotiates) and its attack meets the defences where they stand:

- ``malformed``: every other move it makes carries broken terms (a negative quantity or price, a
  window in another slot), and it sends moves in its peer's name and into other negotiations;
- ``replay``: it sends each of its moves twice, and moves of its earlier negotiations again;
- ``spam``: every message it receives is answered with a burst of extra offers;
- ``renege``: it accepts and is accepted as usual, then never pays an invoice;
- ``misreport``: it reports ten times its quantity and the far end of the price range to the
  mean-field service and the board (false state reports);
- ``counterfeit``: once agreed, it sends its peer an invoice of its own (its own payee, a payment
  hash it made up) and, as a buyer, a Paid it never paid;
- ``absent``: not an attack: the member sits out (the baseline "the same run without them");
- ``honest``: not an attack either: the same members trade honestly (the control that tells an
  attack's damage from the competition the attackers bring by trading at all);
- ``ideal-<behaviour>``: the same members under an ideal defence against that behaviour: what
  their trading would be if every attack had no effect at all. For ``renege`` they sell as
  usual and never buy (a buyer that will not pay has no demand anyone could serve, while its
  sales are real); for the other behaviours every real move stands and every bad one is void,
  which is the honest control. ``ideal-all`` takes each member's behaviour in turn, as ``all``.

The defences are the runtime's (:mod:`negotiator.router`, :mod:`negotiator.settler`) and the
mean-field service's robust location; none of these classes is special-cased anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final

import msgspec

from agents.trader import Trader
from negotiator.actor import Effect, Position
from negotiator.messages import (
    Accept,
    AnyMessage,
    Counter,
    Invoice,
    InvoiceIssued,
    Paid,
    Propose,
    Side,
    Terms,
)

_MOVES: Final = (Propose, Counter, Accept)


class Adversary(Trader):
    """A trader with an attack: :meth:`attack` rewrites what the honest trader would send."""

    __slots__ = ("_count", "_sent")
    behaviour: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sent: list[Any] = []
        """Its own moves so far (replayed by ``replay``)."""
        self._count = 0

    def handle(self, message: AnyMessage, now: float) -> Sequence[Effect]:
        effects = super().handle(message, now)
        self._count += 1
        return self.attack(message, list(effects))

    def attack(self, message: AnyMessage, effects: list[Effect]) -> Sequence[Effect]:
        """What it sends instead of ``effects`` (the honest answer to ``message``)."""
        return effects


class Malformed(Adversary):
    """Broken terms on its own turn, moves in others' names and negotiations."""

    behaviour = "malformed"

    def attack(self, message: AnyMessage, effects: list[Effect]) -> Sequence[Effect]:
        out: list[Effect] = []
        for e in effects:
            if not isinstance(e, _MOVES):
                out.append(e)
                continue
            t = e.terms
            broken = (
                Terms(t.resource, -t.quantity, t.price, t.start, t.end),
                Terms(t.resource, t.quantity, -1, t.start, t.end),
                Terms(t.resource, t.quantity, t.price, t.start + 7, t.end + 7),
            )[self._count % 3]
            out.append(msgspec.structs.replace(e, terms=broken) if self._count % 2 else e)
            out.append(msgspec.structs.replace(e, sender=e.receiver, receiver=e.sender))
            out.append(msgspec.structs.replace(e, nid=e.nid + 1))
        return out


class Replay(Adversary):
    """Each move twice, and an old move of another negotiation with it."""

    behaviour = "replay"

    def attack(self, message: AnyMessage, effects: list[Effect]) -> Sequence[Effect]:
        moves = [e for e in effects if isinstance(e, (*_MOVES,))]
        out = list(effects) + moves
        if self._sent:
            out.append(self._sent[self._count % len(self._sent)])
        self._sent.extend(moves)
        del self._sent[:-64]
        return out


class Spam(Adversary):
    """A burst of offers for every message it receives."""

    behaviour = "spam"

    def attack(self, message: AnyMessage, effects: list[Effect]) -> Sequence[Effect]:
        t = Terms(self.resource, 1, 1, 0, 1)
        burst = [
            Propose(message.nid + 1 + i, self.address, message.sender, 1, 1, Side.BUY, t)
            for i in range(16)
        ]
        return [*effects, *burst]


class Renege(Adversary):
    """Agrees, then never pays."""

    behaviour = "renege"

    def attack(self, message: AnyMessage, effects: list[Effect]) -> Sequence[Effect]:
        if isinstance(message, InvoiceIssued):
            return []
        return effects


class Misreport(Adversary):
    """Ten times its quantity at the far end of the price range, on the board and to the
    mean-field service; it then trades what it really has."""

    behaviour = "misreport"

    def open_slot(self, slot: int, view: object) -> Position | None:
        position = super().open_slot(slot, view)
        if position is None:
            return None
        imp, exp = self._tariff(slot)
        extreme = exp if position.side is Side.BUY else imp  # bid the floor, ask the ceiling
        return msgspec.structs.replace(
            position, quantity=position.quantity * 10, reservation=extreme
        )


class Counterfeit(Adversary):
    """Its own invoice to the buyer, its own Paid to the seller."""

    behaviour = "counterfeit"

    def attack(self, message: AnyMessage, effects: list[Effect]) -> Sequence[Effect]:
        out = list(effects)
        accepted = [e for e in effects if isinstance(e, Accept)]
        if isinstance(message, Accept):
            accepted.append(message)
        for a in accepted:
            peer = a.receiver if a.sender == self.address else a.sender
            amount = a.terms.amount_msat()
            if amount <= 0:
                continue
            fake = Invoice(self.address, amount, f"{a.nid:064x}", f"fake-{a.nid}", "lnbc1", 1e18)
            out.append(InvoiceIssued(a.nid, self.address, peer, 0, a.seq + 1, fake))
            out.append(Paid(a.nid, self.address, peer, 0, a.seq + 2, "00" * 32, "00" * 32, 0))
        return out


class Absent(Trader):
    """A member who sits the run out (what the market would be without the adversaries)."""

    __slots__ = ()

    def open_slot(self, slot: int, view: object) -> Position | None:
        return None

    def close_slot(self, slot: int) -> None:
        return None


class SellsOnly(Trader):
    """A member who sells as usual and never buys (the ideal defence against ``renege``)."""

    __slots__ = ()

    def open_slot(self, slot: int, view: object) -> Position | None:
        position = super().open_slot(slot, view)
        if position is not None and position.side is Side.BUY:
            self._available = 0
            return None
        return position


BEHAVIOURS: Final[dict[str, type[Trader]]] = {
    cls.behaviour: cls for cls in (Malformed, Replay, Spam, Renege, Misreport, Counterfeit)
}
"""The attacks by name."""


def adversary(name: str, index: int) -> type[Trader]:
    """The class of the ``index``-th Byzantine member for ``name``: one behaviour, ``all``
    (the behaviours in turn), ``absent``, ``honest`` or ``ideal-`` one of the behaviours or
    ``all``."""
    if name == "absent":
        return Absent
    if name == "honest":
        return Trader
    ideal = name.startswith("ideal-")
    behaviour = name.removeprefix("ideal-")
    if behaviour == "all":
        kinds = list(BEHAVIOURS.values())
        cls = kinds[index % len(kinds)]
    elif behaviour in BEHAVIOURS:
        cls = BEHAVIOURS[behaviour]
    else:
        choices = ", ".join([*BEHAVIOURS, "all", "absent", "honest", "ideal-<one of these>"])
        raise ValueError(f"unknown Byzantine behaviour {name!r}; choose from {choices}")
    if ideal:
        return SellsOnly if cls is Renege else Trader
    return cls


__all__ = [
    "BEHAVIOURS",
    "Absent",
    "Adversary",
    "Counterfeit",
    "Malformed",
    "Misreport",
    "Renege",
    "Replay",
    "SellsOnly",
    "Spam",
    "adversary",
]
