"""Message authentication at process boundaries: every message that leaves a process is signed
with its sender's node key and verified where it arrives.

Inside one process the router already knows who sent what (an agent's effects are its own, and
the router refuses moves in another's name). Across processes a frame could come from anyone who
can reach the NATS server, so :class:`~negotiator.natsbus.NatsBus` signs each agent message
with its sender's key, and each report to the coordinator with its shard's key, and the receiver
refuses whatever does not verify against the sender's public key (counted, logged).

Keys are secp256k1 (coincurve): an agent's key is its Lightning node's (a node id is its public
key, which the network gossips), so a :class:`Keyring` needs the secrets of the members it
signs for and only the public keys of the others. ECDSA over sha256 of the encoded message:
about 40 us to sign and 60 us to verify on this machine, which is why messages are signed
one by one only where they cross a process boundary, never on the in-process path.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from coincurve import PrivateKey, PublicKey


class Keyring:
    """Secrets of the identities this process signs for; public keys of everyone it verifies.

    ``secret_of(identity)`` gives an identity's 32-byte secret (its node's); only those in
    ``own`` are kept as private keys. ``public_of(identity)`` gives a compressed public key (33
    bytes) or None for an identity nobody knows; by default it is derived from ``secret_of``,
    which only a simulated network (deterministic node secrets) allows.
    """

    def __init__(
        self,
        secret_of: Callable[[Hashable], bytes],
        own: Iterable[Hashable],
        public_of: Callable[[Hashable], bytes | None] | None = None,
    ) -> None:
        self._secret_of = secret_of
        self._own = set(own)
        self._private: dict[Hashable, PrivateKey] = {}
        self._public_of = public_of or (
            lambda identity: PrivateKey(secret_of(identity)).public_key.format()
        )
        self._public: dict[Hashable, PublicKey | None] = {}
        self.refused = 0
        """Signatures that did not verify."""

    def sign(self, identity: Hashable, data: bytes) -> bytes:
        """Sign ``data`` as ``identity`` (KeyError: not an identity of this process)."""
        key = self._private.get(identity)
        if key is None:
            if identity not in self._own:
                raise KeyError(f"{identity!r} does not sign in this process")
            key = self._private[identity] = PrivateKey(self._secret_of(identity))
        return bytes(key.sign(data))

    def verify(self, identity: Hashable, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``identity``'s over ``data``."""
        key = self._public.get(identity)
        if key is None and identity not in self._public:
            raw = self._public_of(identity)
            key = PublicKey(raw) if raw is not None else None
            self._public[identity] = key
        try:
            ok = key is not None and bool(key.verify(signature, data))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            self.refused += 1
        return ok


__all__ = ["Keyring"]
