"""The runtime's exceptions: one small, flat hierarchy; each class says when it is raised."""

from __future__ import annotations

import enum


class NegotiatorError(Exception):
    """Base of every error this project raises on purpose."""


class MessageDecodeError(NegotiatorError):
    """Bytes could not be decoded into a valid message (garbage, wrong types, unknown kind)."""


class Violation(enum.StrEnum):
    """Why a message was refused by the protocol (a bounded set: used as a metrics label)."""

    UNKNOWN_NEGOTIATION = "unknown_negotiation"
    WRONG_PARTY = "wrong_party"
    OUT_OF_TURN = "out_of_turn"
    REPLAY = "replay"
    WRONG_ROUND = "wrong_round"
    ROUND_LIMIT = "round_limit"
    TERMS_MISMATCH = "terms_mismatch"
    BAD_TERMS = "bad_terms"
    ILLEGAL_IN_PHASE = "illegal_in_phase"
    CLOSED = "closed"


class ProtocolViolation(NegotiatorError):
    """A message is not legal in its negotiation's current state; the state is left unchanged."""

    def __init__(self, violation: Violation, nid: int, detail: str = "") -> None:
        self.violation = violation
        self.nid = nid
        self.detail = detail
        super().__init__(f"negotiation {nid}: {violation.value}{': ' + detail if detail else ''}")


class BusError(NegotiatorError):
    """The message bus could not deliver or answer."""


class UnknownAddress(BusError):
    """A message or request was addressed to nobody registered on the bus."""


class RequestTimeout(BusError):
    """A request on the bus got no reply within its timeout."""


class SettlementError(NegotiatorError):
    """A settlement rail refused or failed an operation; `reason` is a short, bounded code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}{': ' + detail if detail else ''}")


class PaymentFailed(SettlementError):
    """A payment did not complete (no funds, no route, expired, unknown invoice); nothing moved."""


class AlreadyPaid(SettlementError):
    """An invoice was paid before; paying it again is refused (the payment hash is idempotent)."""


class InvoiceError(SettlementError):
    """An invoice could not be created (bad amount, duplicate label with other terms, bad payee)."""


class LedgerError(NegotiatorError):
    """The ledger refused a write that would break its invariants (e.g. a second payment hash)."""


class RecoveryError(NegotiatorError):
    """A state directory cannot be created or resumed (missing, already in use, written by
    another version), or a resumed run does not match what the killed one journaled."""
