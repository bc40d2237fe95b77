"""Fuzzing the wire and the protocol: generated inputs through decode, what decodes through the
state machine.

Each input starts as a valid message of a random kind (small negotiation ids, parties, rounds
and sequence numbers, so that many of them are legal somewhere), then is kept, mutated at the
byte level (bit flips, overwritten, inserted and deleted bytes, truncation), spliced with
another, or replaced by random bytes. :func:`negotiator.messages.decode` must return a message
or raise :class:`~negotiator.errors.MessageDecodeError`; a decoded negotiation or settlement
message is applied to the negotiation it names, which walks on at random through the phases
(a new one opens when it closes), and :func:`negotiator.protocol.transition` must return a
transition or raise :class:`~negotiator.errors.ProtocolViolation`, never moving the sequence
number back nor the round past the limit. Anything else is a crash, kept with its input.

    python -m negotiator.fuzz --messages 1000000 --out fuzz-crashes/
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from negotiator.errors import MessageDecodeError, ProtocolViolation
from negotiator.messages import (
    Accept,
    Counter,
    Message,
    Paid,
    Propose,
    Reject,
    SettlementFailed,
    Side,
    Terms,
    Timeout,
    Withdraw,
    decode,
    encode,
)
from negotiator.protocol import TERMINAL, NegotiationState, start, transition

MAX_ROUNDS = 4


@dataclass
class Report:
    """What a fuzz run did: inputs, how they fared, and the crashes (input, error)."""

    messages: int = 0
    decoded: int = 0
    rejected: int = 0
    transitions: int = 0
    violations: int = 0
    crashes: list[tuple[bytes, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def _terms(rng: random.Random) -> Terms:
    return Terms(
        rng.choice(["energy", "slot", ""]),
        rng.randint(1, 5000),
        rng.randint(0, 300_000),
        rng.randint(0, 4),
        rng.randint(4, 8),
    )


def _valid(rng: random.Random) -> Message:
    """A well-formed message of a random kind, with fields drawn so that some are legal."""
    nid, rnd, seq = rng.randint(1, 3), rng.randint(0, 5), rng.randint(0, 8)
    sender, receiver = rng.randint(-1, 2), rng.randint(-1, 2)
    kind = rng.randrange(8)
    if kind == 0:
        side = rng.choice([Side.BUY, Side.SELL])
        return Propose(nid, sender, receiver, rnd, seq, side, _terms(rng))
    if kind == 1:
        return Counter(nid, sender, receiver, rnd, seq, _terms(rng))
    if kind == 2:
        return Accept(nid, sender, receiver, rnd, seq, _terms(rng))
    if kind == 3:
        return Reject(nid, sender, receiver, rnd, seq, "no")
    if kind == 4:
        return Withdraw(nid, sender, receiver, rnd, seq)
    if kind == 5:
        digest = f"{rng.getrandbits(256):064x}"
        return Paid(nid, sender, receiver, rnd, seq, digest, digest)
    if kind == 6:
        return SettlementFailed(nid, sender, receiver, rnd, seq, "no_route")
    return Timeout(nid, -1, receiver, rnd, seq)


def _mutate(data: bytes, rng: random.Random, other: bytes) -> bytes:
    """The bytes kept, mutated, spliced with ``other`` or replaced by random ones."""
    roll = rng.random()
    if roll < 0.3:
        return data
    if roll < 0.85:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            at = rng.randrange(len(out)) if out else 0
            if op == 0 and out:
                out[at] ^= 1 << rng.randrange(8)
            elif op == 1 and out:
                out[at] = rng.randrange(256)
            elif op == 2:
                out.insert(at, rng.randrange(256))
            elif op == 3 and out:
                del out[at]
            else:
                del out[at:]
        return bytes(out)
    if roll < 0.95:
        return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
    return rng.randbytes(rng.randint(0, 64))


def _open(rng: random.Random, nid: int) -> NegotiationState:
    propose = Propose(nid, 0, 1, 1, 1, rng.choice([Side.BUY, Side.SELL]), _terms(rng))
    return start(propose, 0.0, max_rounds=MAX_ROUNDS)[0]


def fuzz(
    messages: int,
    seed: int = 0,
    *,
    on_progress: Callable[[int], None] | None = None,
    decoder: Callable[[bytes], object] = decode,
) -> Report:
    """Run ``messages`` generated inputs through ``decoder`` and the protocol (see the module
    docstring); ``on_progress`` hears how many are done every 10,000."""
    rng = random.Random(seed)
    report = Report()
    states = {nid: _open(rng, nid) for nid in (1, 2, 3)}
    previous = encode(_valid(rng))
    began = time.perf_counter()
    for i in range(messages):
        raw = encode(_valid(rng))
        data = _mutate(raw, rng, previous)
        previous = raw
        report.messages += 1
        try:
            message = decoder(data)
        except MessageDecodeError:
            report.rejected += 1
            continue
        except Exception as exc:  # a crash: kept, not raised
            report.crashes.append((data, f"decode: {type(exc).__name__}: {exc}"))
            continue
        report.decoded += 1
        if isinstance(message, Message) and message.nid in states:
            _apply(report, states, message, data, rng)
        if on_progress is not None and (i + 1) % 10_000 == 0:
            on_progress(i + 1)
    report.seconds = time.perf_counter() - began
    return report


def _apply(
    report: Report,
    states: dict[int, NegotiationState],
    message: Message,
    data: bytes,
    rng: random.Random,
) -> None:
    state = states[message.nid]
    try:
        if isinstance(message, Propose) and rng.random() < 0.1:
            new, _ = start(message, 0.0, max_rounds=MAX_ROUNDS)
        else:
            new, _ = transition(state, message, 1.0)  # type: ignore[arg-type]
            if new.seq < state.seq or new.round > new.max_rounds:
                report.crashes.append((data, f"protocol: {state} -> {new}"))
                return
    except ProtocolViolation:
        report.violations += 1
        return
    except Exception as exc:
        report.crashes.append((data, f"protocol: {type(exc).__name__}: {exc}"))
        return
    report.transitions += 1
    states[message.nid] = _open(rng, message.nid) if new.phase in TERMINAL else new


def main() -> None:
    from rich.progress import Progress

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"))
    args = parser.parse_args()
    with Progress() as progress:
        task = progress.add_task("fuzzing", total=args.messages)
        report = fuzz(
            args.messages,
            args.seed,
            on_progress=lambda done: progress.update(task, completed=done),
        )
        progress.update(task, completed=args.messages)
    for k, (data, error) in enumerate(report.crashes):
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"crash-{k}.bin").write_bytes(data)
        (args.out / f"crash-{k}.txt").write_text(error + "\n")
    print(
        f"{report.messages:,} messages in {report.seconds:.1f} s ({report.per_s:,.0f}/s):"
        f" {report.decoded:,} decoded, {report.rejected:,} rejected;"
        f" {report.transitions:,} transitions, {report.violations:,} violations;"
        f" {len(report.crashes)} crashes"
    )
    if report.crashes:
        raise SystemExit(f"crashing inputs in {args.out}/")


if __name__ == "__main__":
    main()
