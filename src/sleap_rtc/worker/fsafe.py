"""Race-free access to the worker's mounts: open what a peer names *beneath* a mount root.

A check by path followed by a use by path is a race: between the two, anyone who
can write inside a mount (a job, another user) can swap a checked file or folder
for a symlink to ``/etc/shadow``. These helpers close that gap.

The rule is always the same. A peer's path is first resolved (``realpath``, so a
link *inside* a mount that points elsewhere inside the mounts keeps working) and
checked against the mounts; the resolved path, which then holds no links, is
opened relative to a descriptor of its mount's root without following any link
at all: with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel
has it (Linux 5.6+), else component by component with ``O_NOFOLLOW`` and
``dir_fd``. A link that appeared after the check makes the open fail with
``ELOOP`` instead of being followed; callers resolve again (a link retargeted
inside the mounts is then followed, one leading outside is refused) or give up.
Whatever is then read, listed or ``fstat``-ed comes from that descriptor, so it
is guaranteed to lie beneath the mount root.

Also here: :func:`clip` and :func:`echo`, which cut whatever a peer sent before it
is echoed back in an error message.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sleap_rtc.jobs.mounts import Mount, Mounts

T = TypeVar("T")

#: Characters of peer-sent text kept when it is echoed in a message.
ECHO_CHARS = 200
CLIP_MARK = "…[cut]"

#: Flags of descriptors used only to walk and ``fstatat`` (no read permission needed).
_O_PATH = getattr(os, "O_PATH", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_WALK = (_O_PATH or os.O_RDONLY) | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
#: A folder to list (``scandir`` needs a readable descriptor).
DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
#: A file to read: never blocks on a FIFO, never becomes a controlling terminal.
FILE_FLAGS = os.O_RDONLY | _O_NONBLOCK | _O_NOCTTY | _O_CLOEXEC

_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437  # the same number on every Linux architecture that has it


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def clip(text: object, limit: int = ECHO_CHARS) -> str:
    """``text`` made safe to echo: at most ``limit`` characters, then a marker.

    Names read from disk may hold undecodable bytes (surrogates), which no
    message can carry; they are shown as ``\\xNN``.
    """
    value = str(text)
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value if len(value) <= limit else value[:limit] + CLIP_MARK


def echo(text: object, limit: int = ECHO_CHARS) -> str:
    """``text`` quoted (as ``repr``) and cut like :func:`clip`."""
    value = clip(text, limit)
    if value.endswith(CLIP_MARK) and len(value) > limit:
        return repr(value[: -len(CLIP_MARK)]) + CLIP_MARK
    return repr(value)


def clip_problem(message: str, raw: str) -> str:
    """A message that quotes the peer's path ``raw`` (e.g. a mounts problem), with that
    path cut to :data:`ECHO_CHARS` and the whole cut to 2,000 characters."""
    if len(raw) > ECHO_CHARS and raw in message:
        message = message.replace(raw, clip(raw))
    return clip(message, 2000)


def display(name: str) -> str:
    """A name from disk as text every message can carry (undecodable bytes as ``\\xNN``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# -- openat2 ----------------------------------------------------------------------------------


def _load_openat2() -> Callable[[int, str, int], int] | None:
    """``openat2`` through libc's ``syscall`` (Python's ``os`` has no binding), if usable.

    Probed once: a kernel before 5.6 answers ENOSYS, and some container sandboxes
    EPERM; either way the component-by-component walk is used instead.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):  # pragma: no cover
        return None
    syscall.restype = ctypes.c_long

    def openat2(dir_fd: int, path: str, flags: int) -> int:
        # O_NOFOLLOW would make an O_PATH open return a link itself; without it,
        # RESOLVE_NO_SYMLINKS refuses a link anywhere, the last name included.
        how = _OpenHow(flags & ~_O_NOFOLLOW, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
        for _ in range(16):
            fd = syscall(
                ctypes.c_long(_SYS_OPENAT2),
                ctypes.c_int(dir_fd),
                ctypes.c_char_p(os.fsencode(path)),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
            if fd >= 0:
                return int(fd)
            code = ctypes.get_errno()
            if code not in (errno.EAGAIN, errno.EINTR):
                raise OSError(code, os.strerror(code), path)
            # EAGAIN: a rename raced the lookup and the kernel asks to try again.
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)

    try:
        probe_root = os.open("/", _WALK)
    except OSError:  # pragma: no cover
        return None
    try:
        os.close(openat2(probe_root, ".", _WALK))
    except OSError:
        return None
    finally:
        os.close(probe_root)
    return openat2


_openat2 = None if os.environ.get("SLEAP_RTC_NO_OPENAT2") else _load_openat2()
#: True where the kernel's ``openat2`` does the resolving (``SLEAP_RTC_NO_OPENAT2=1``
#: forces the component-by-component walk, e.g. under a sandbox that mishandles it).
HAS_OPENAT2 = _openat2 is not None


def _parts(rel: str) -> list[str]:
    """The components of a path relative to a root; refuses anything that could climb."""
    if rel.startswith("/") or "\0" in rel:
        raise OSError(errno.EINVAL, "not a relative path", rel)
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EXDEV, "path climbs out of its root", rel)
    return parts


def _walk(root_fd: int, parts: list[str]) -> int:
    """A new descriptor of the folder ``parts`` beneath ``root_fd``, reached without links."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, _WALK, dir_fd=fd)
            except OSError as exc:
                # With O_PATH a link is refused as "not a folder"; say what it is.
                if exc.errno == errno.ENOTDIR and _is_link(fd, part):
                    raise OSError(errno.ELOOP, "a link is in the way", part) from None
                raise
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_beneath(root_fd: int, rel: str, flags: int) -> int:
    """Open ``rel`` beneath the folder ``root_fd`` without following any link.

    ``rel`` is relative (``""`` is the root itself). Raises OSError; ``ELOOP``
    when a link is in the way (anywhere, the last name included), ``EXDEV``
    when the path would leave the root. The caller owns the descriptor.
    """
    parts = _parts(rel)
    if _openat2 is not None:
        return _openat2(root_fd, "/".join(parts) or ".", flags | _O_CLOEXEC)
    if not parts:
        return os.open(".", flags | _O_CLOEXEC, dir_fd=root_fd)
    parent = _walk(root_fd, parts[:-1])
    try:
        fd = os.open(parts[-1], flags | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)
    if _O_PATH and flags & _O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)  # O_PATH | O_NOFOLLOW opens a link itself instead of refusing it
        raise OSError(errno.ELOOP, "the path is a link", rel)
    return fd


def lstat_beneath(root_fd: int, rel: str) -> os.stat_result:
    """The status of ``rel`` beneath ``root_fd``, reached without following any link.

    Needs no read permission on the file itself. ``ELOOP`` if ``rel`` or a folder
    on the way is a link.
    """
    parts = _parts(rel)
    if not parts:
        return os.fstat(root_fd)
    parent = (
        _openat2(root_fd, "/".join(parts[:-1]) or ".", _WALK)
        if _openat2 is not None
        else _walk(root_fd, parts[:-1])
    )
    try:
        info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)
    if stat.S_ISLNK(info.st_mode):
        raise OSError(errno.ELOOP, "the path is a link", rel)
    return info


@contextlib.contextmanager
def root_fd(mount: Mount) -> Iterator[int]:
    """A descriptor of a mount's root (its configured, already-resolved folder).

    The root was resolved when the mount was made, so its last name is no link;
    one that became a link since is refused (``ELOOP``) rather than followed.
    """
    fd = os.open(mount.path, _WALK)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Located:
    """A resolved path inside a mount: the mount, and the path beneath its root."""

    mount: Mount
    real: Path
    rel: str


def locate(mounts: Mounts, real: Path) -> Located | None:
    """Where the already-resolved ``real`` lies in the mounts (the deepest mount wins)."""
    mount = mounts.containing(real)
    if mount is None:
        return None
    rel = "" if real == mount.path else real.relative_to(mount.path).as_posix()
    return Located(mount, real, rel)


def resolve_inside(mounts: Mounts, path: str | Path) -> Located | None:
    """``path`` with its links followed (``realpath``), if that lies inside a mount."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None
    return locate(mounts, real)


#: How often a path is resolved again when a link appears between check and open.
RETRIES = 3


def retry_on_link(attempt: Callable[[], T]) -> T:
    """Run ``attempt`` again (it resolves afresh) while it fails with ``ELOOP``.

    ``ELOOP`` here means the path changed into a link after it was resolved; the
    next attempt follows that link if, and only if, it stays inside the mounts.
    The last ``ELOOP`` (a link that loops, or keeps changing) is raised.
    """
    for tries in range(RETRIES):
        try:
            return attempt()
        except OSError as exc:
            if exc.errno != errno.ELOOP or tries == RETRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def stat_inside(mounts: Mounts, path: str | Path) -> tuple[Located, os.stat_result] | None:
    """What ``path`` leads to, if inside the mounts, stat'ed beneath its mount root.

    Links are followed by resolving the path, never by the ``stat`` itself; None
    when it leads outside, does not exist, loops, or can't be read.
    """

    def attempt() -> tuple[Located, os.stat_result] | None:
        where = resolve_inside(mounts, path)
        if where is None:
            return None
        with root_fd(where.mount) as fd:
            return where, lstat_beneath(fd, where.rel)

    try:
        return retry_on_link(attempt)
    except OSError:
        return None


def open_file_inside(located: Located) -> int:
    """A read descriptor of the regular file at ``located``, opened beneath its mount.

    Raises OSError (``ELOOP`` for a link in the way, ``EINVAL`` for a non-file).
    """
    with root_fd(located.mount) as fd:
        handle = open_beneath(fd, located.rel, FILE_FLAGS)
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", located.rel)
        # O_NONBLOCK was only for the open (a FIFO would have blocked it).
        os.set_blocking(handle, True)
    except BaseException:
        os.close(handle)
        raise
    return handle


def open_dir_inside(located: Located) -> int:
    """A readable descriptor of the folder at ``located``, opened beneath its mount."""
    with root_fd(located.mount) as fd:
        return open_beneath(fd, located.rel, DIR_FLAGS)
