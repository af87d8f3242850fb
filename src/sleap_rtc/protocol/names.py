"""What a file name on the wire may be: one name in any script, never a path.

Upload and download names, and each part of a downloaded folder's paths, are checked
with these rules by the message types (:mod:`sleap_rtc.protocol.jobs`), made to fit
them by :func:`sleap_rtc.protocol.transfer.safe_name`, and checked again by the
worker before it announces a file.
"""

from __future__ import annotations

import unicodedata

#: Longest file name on the wire, in UTF-8 bytes (what common file systems allow).
MAX_NAME_BYTES = 255
#: Unicode categories no name may hold: controls, format characters (bidi overrides
#: that make a name display as another), surrogates, private use, line separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def name_char_ok(char: str) -> bool:
    """Whether one character may stand in a file name a peer sends or is sent."""
    return char not in "/\\" and unicodedata.category(char) not in _UNSAFE_CATEGORIES


def is_plain_name(name: str) -> bool:
    """A single file name in any script (``souris_été.slp``, ``r_preds, v1 #2.slp``):
    no path separators or control/format characters, not hidden and not option-like
    (no leading ``.``, ``-`` or space, no trailing space), at most 255 UTF-8 bytes."""
    return (
        bool(name)
        and name[0] not in ".- "
        and not name.endswith(" ")
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        and all(name_char_ok(c) for c in name)
    )


def plain_name(name: str) -> str:
    """``name`` if it is a plain file name (a pydantic validator); ValueError if not."""
    if not is_plain_name(name):
        raise ValueError(
            "not a plain file name (no /, \\, control characters, leading '.', '-' or "
            "space; at most 255 UTF-8 bytes)"
        )
    return name
