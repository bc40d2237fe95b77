"""The kernel: wire messages, the protocol state machine, the bus, the runtime and its engines."""

from negotiator.actor import Agent, Effect, Matcher, Pairing, Pay, Position, Skip
from negotiator.bus import Bus, LocalBus
from negotiator.errors import (
    AlreadyPaid,
    BusError,
    InvoiceError,
    LedgerError,
    MessageDecodeError,
    NegotiatorError,
    PaymentFailed,
    ProtocolViolation,
    RecoveryError,
    RequestTimeout,
    SettlementError,
    UnknownAddress,
    Violation,
)
from negotiator.ledger import Agreement, Ledger
from negotiator.metrics import Exporter, RunMetrics
from negotiator.protocol import NegotiationState, Phase, start, transition
from negotiator.runtime import RunReport, Runtime, RuntimeConfig, SlotReport
from negotiator.settlement import PaymentResult, PaymentStatus, Rail

__all__ = [
    "Agent",
    "Agreement",
    "AlreadyPaid",
    "Bus",
    "BusError",
    "Effect",
    "Exporter",
    "InvoiceError",
    "Ledger",
    "LedgerError",
    "LocalBus",
    "Matcher",
    "MessageDecodeError",
    "NegotiationState",
    "NegotiatorError",
    "Pairing",
    "Pay",
    "PaymentFailed",
    "PaymentResult",
    "PaymentStatus",
    "Phase",
    "Position",
    "ProtocolViolation",
    "Rail",
    "RecoveryError",
    "RequestTimeout",
    "RunMetrics",
    "RunReport",
    "Runtime",
    "RuntimeConfig",
    "SettlementError",
    "Skip",
    "SlotReport",
    "UnknownAddress",
    "Violation",
    "start",
    "transition",
]
