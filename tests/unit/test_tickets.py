"""Peer tickets as the worker checks them, signed by the server's real token signer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sleap_rtc.protocol.signaling import Sender
from sleap_rtc.server.auth import AccessClaims, TokenSigner
from sleap_rtc.worker.tickets import SeenTickets, TicketError, TicketVerifier

ROOM, ROOM_ID, WORKER = "lab", "r0123456789abcdef", "worker-1"


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner("k1", Ed25519PrivateKey.generate(), "test-server")


def _claims(user_id: int, name: str) -> AccessClaims:
    return AccessClaims(
        user_id=user_id,
        username=name,
        is_admin=False,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        session_id="s1",
    )


def _ticket(
    signer: TokenSigner,
    user_id: int = 7,
    name: str = "alice",
    *,
    room: str = ROOM,
    room_id: str = ROOM_ID,
    worker: str = WORKER,
    ttl: float = 120,
) -> str:
    token, _ = signer.issue_ticket(
        _claims(user_id, name), room, room_id, worker, timedelta(seconds=ttl)
    )
    return token


def _verifier(signer: TokenSigner, seen: SeenTickets | None = None) -> TicketVerifier:
    return TicketVerifier(signer.public_pem(), signer.issuer, ROOM, ROOM_ID, WORKER, seen=seen)


def _session(user_id: str | None = "7", name: str = "alice", kind: str = "client") -> Sender:
    return Sender(kind=kind, id="c-1", room=ROOM, name=name, user_id=user_id)  # type: ignore[arg-type]


def test_a_ticket_opens_one_channel_only(signer: TokenSigner) -> None:
    verifier = _verifier(signer)
    ticket = _ticket(signer)
    peer = verifier.verify(ticket, _session())
    assert (peer.user, peer.user_id, peer.room) == ("alice", "7", ROOM)
    with pytest.raises(TicketError, match="already used"):
        verifier.verify(ticket, _session())
    # From another session of the same user, too.
    with pytest.raises(TicketError, match="already used"):
        verifier.verify(
            ticket, Sender(kind="client", id="c-2", room=ROOM, name="alice", user_id="7")
        )
    # A fresh ticket works.
    assert verifier.verify(_ticket(signer), _session()).user == "alice"


def test_a_ticket_is_no_use_to_anyone_it_was_not_issued_to(signer: TokenSigner) -> None:
    verifier = _verifier(signer)
    ticket = _ticket(signer, user_id=7, name="alice")
    for sender in (
        _session(user_id="8", name="bob"),  # another member presenting alice's ticket
        _session(user_id="8", name="alice"),  # the name alone proves nothing
        _session(user_id=None),  # a sender the server didn't vouch for
        _session(kind="worker"),
    ):
        with pytest.raises(TicketError, match="issued to another user"):
            verifier.verify(ticket, sender)
    # Refusing a thief doesn't spend the ticket: its owner can still use it.
    assert verifier.verify(ticket, _session()).user_id == "7"


def test_a_ticket_is_checked_by_room_id_and_name_and_worker(signer: TokenSigner) -> None:
    verifier = _verifier(signer)
    # A room deleted and made again under the same name has another id.
    with pytest.raises(TicketError, match="another room"):
        verifier.verify(_ticket(signer, room_id="r-recreated"), _session())
    with pytest.raises(TicketError, match="another room"):
        verifier.verify(_ticket(signer, room="other"), _session())
    with pytest.raises(TicketError, match="another worker"):
        verifier.verify(_ticket(signer, worker="worker-2"), _session())


def test_tickets_signed_by_someone_else_or_without_an_id_are_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signer = TokenSigner("k1", key, "test-server")
    verifier = _verifier(signer)
    other = TokenSigner("k2", Ed25519PrivateKey.generate(), signer.issuer)
    with pytest.raises(TicketError, match="not valid"):
        verifier.verify(_ticket(other), _session())
    now = int(datetime.now(UTC).timestamp())
    claims = {
        "sub": "7",
        "name": "alice",
        "aud": "peer",
        "iss": signer.issuer,
        "iat": now,
        "exp": now + 60,
        "room": ROOM,
        "rid": ROOM_ID,
        "wkr": WORKER,
    }
    no_jti = jwt.encode(claims, key, algorithm="EdDSA")
    with pytest.raises(TicketError, match="jti"):
        verifier.verify(no_jti, _session())
    expired = _ticket(signer, ttl=-5)
    with pytest.raises(TicketError, match="expired"):
        verifier.verify(expired, _session())


def test_used_tickets_are_remembered_across_a_new_registration(signer: TokenSigner) -> None:
    seen = SeenTickets()
    ticket = _ticket(signer)
    _verifier(signer, seen).verify(ticket, _session())
    # The worker registered again (a reconnect) and made a new verifier.
    with pytest.raises(TicketError, match="already used"):
        _verifier(signer, seen).verify(ticket, _session())


def test_seen_ticket_ids_are_dropped_once_their_tickets_expire() -> None:
    now = [1000.0]
    seen = SeenTickets(limit=100, clock=lambda: now[0])
    for i in range(50):
        seen.claim(f"short-{i}", expires_at=1010.0)
    seen.claim("long", expires_at=2000.0)
    assert len(seen) == 51
    with pytest.raises(TicketError, match="already used"):
        seen.claim("short-3", expires_at=1010.0)
    now[0] = 1011.0
    seen.claim("next", expires_at=1100.0)
    assert len(seen) == 2  # the expired ones are gone; "long" and "next" remain
    with pytest.raises(TicketError, match="already used"):
        seen.claim("long", expires_at=2000.0)
    # Full of live ids: new tickets are refused rather than old ids forgotten.
    for i in range(98):
        seen.claim(f"live-{i}", expires_at=1500.0)
    assert len(seen) == 100
    with pytest.raises(TicketError, match="too many"):
        seen.claim("one-more", expires_at=1500.0)
    now[0] = 1600.0
    seen.claim("one-more", expires_at=1700.0)
    assert len(seen) == 2
