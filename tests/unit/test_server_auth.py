"""Secrets the server hands out: shapes a user can type and a shell can't misread."""

from __future__ import annotations

import re

from sleap_rtc.server import auth


def test_invite_codes_never_look_like_options_and_are_unique() -> None:
    codes = {auth.new_invite_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(re.fullmatch(r"[a-z2-7]{16}", code) for code in codes)


def test_passwords_hash_and_verify() -> None:
    stored = auth.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert auth.verify_password(stored, "correct horse battery")
    assert not auth.verify_password(stored, "wrong")
    assert not auth.verify_password(None, "anything")
    assert not auth.verify_password("not a hash", "anything")
