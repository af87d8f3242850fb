"""Client settings (config.toml, env, flags), the credential store and CLI durations."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sleap_rtc import locations
from sleap_rtc.cli.durations import Duration, parse_duration
from sleap_rtc.client.config import (
    ROOM_ENV,
    SERVER_ENV,
    ConfigError,
    config_path,
    load_config,
    normalize_server_url,
    resolve_room,
    resolve_server,
)
from sleap_rtc.client.credentials import CredentialStore, StoredSession, credentials_path
from sleap_rtc.protocol.api import TokenPair, UserView


def _write_config(text: str) -> Path:
    path = locations.config_dir() / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---------------------------------------------------------------- normalize_server_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("localhost", "http://localhost"),
        ("  host:8000/  ", "http://host:8000"),
        ("http://host:8000/", "http://host:8000"),
        ("http://host:8000///", "http://host:8000"),
        ("https://sleap-rtc.lab.example.org", "https://sleap-rtc.lab.example.org"),
        ("https://lab.example.org/rtc/", "https://lab.example.org/rtc"),
        ("HTTPS://lab.example.org", "https://lab.example.org"),
        ("http://host:8000/?q=1#frag", "http://host:8000"),
    ],
)
def test_normalize_server_url(url: str, expected: str) -> None:
    assert normalize_server_url(url) == expected
    assert normalize_server_url(expected) == expected


@pytest.mark.parametrize(
    "url", ["ftp://host", "ws://host:8000", "file:///etc/passwd", "http://", "https://", "", "  "]
)
def test_normalize_server_url_refuses(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_server_url(url)
    message = str(caught.value)
    assert message.startswith(f"server URL {url!r} is not usable")
    assert "http(s)://host[:port]" in message


# ---------------------------------------------------------------- resolve_server / resolve_room


def test_config_path_is_under_the_config_dir() -> None:
    assert config_path() == locations.config_dir() / "config.toml"
    assert config_path().is_relative_to(Path(os.environ["SLEAP_RTC_HOME"]))


def test_no_config_file_is_empty_config() -> None:
    assert not config_path().exists()
    assert load_config() == {}
    assert resolve_server(None) is None
    assert resolve_server(None, fallback="fallback:1") == "http://fallback:1"
    assert resolve_room(None) is None


def test_server_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config('server = "https://from-config.example.org/"\n')
    assert resolve_server(None, fallback="fb:1") == "https://from-config.example.org"

    monkeypatch.setenv(SERVER_ENV, "from-env:9000")
    assert resolve_server(None, fallback="fb:1") == "http://from-env:9000"

    assert resolve_server("https://from-flag/", fallback="fb:1") == "https://from-flag"

    monkeypatch.setenv(SERVER_ENV, "")
    assert resolve_server(None, fallback="fb:1") == "https://from-config.example.org"
    assert resolve_server("", fallback="fb:1") == "https://from-config.example.org"


def test_server_env_beats_fallback_without_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVER_ENV, "https://env.example.org")
    assert resolve_server(None, fallback="fb:1") == "https://env.example.org"


def test_resolved_server_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVER_ENV, "ftp://nope")
    with pytest.raises(ConfigError, match="'ftp://nope' is not usable"):
        resolve_server(None)
    _write_config('server = "ftp://config"\n')
    monkeypatch.delenv(SERVER_ENV)
    with pytest.raises(ConfigError, match="'ftp://config' is not usable"):
        resolve_server(None)


def test_room_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config('server = "http://x"\nroom = "config-room"\n')
    assert resolve_room(None) == "config-room"
    monkeypatch.setenv(ROOM_ENV, "env-room")
    assert resolve_room(None) == "env-room"
    assert resolve_room("flag-room") == "flag-room"
    monkeypatch.setenv(ROOM_ENV, "")
    assert resolve_room(None) == "config-room"


def test_load_config_reads_toml() -> None:
    _write_config(
        """
        server = "https://sleap-rtc.lab.example.org"
        room = "my-room"          # default for --room
        """
    )
    assert load_config() == {"server": "https://sleap-rtc.lab.example.org", "room": "my-room"}


def test_invalid_toml_is_a_config_error_naming_the_file() -> None:
    path = _write_config('server = "unterminated\n')
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert str(caught.value).startswith(f"{path} is not valid TOML: ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        resolve_server(None)
    with pytest.raises(ConfigError, match="is not valid TOML"):
        resolve_room(None)


def test_flag_and_env_do_not_read_a_broken_config(monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config("this is = = not toml\n")
    assert resolve_server("flag:1") == "http://flag:1"
    monkeypatch.setenv(ROOM_ENV, "env-room")
    assert resolve_room(None) == "env-room"


def test_config_that_is_not_utf8_is_a_config_error() -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'server = "\xff"\n')
    with pytest.raises(ConfigError):
        load_config()


# ---------------------------------------------------------------- CredentialStore


def _session(username: str = "alice", *, minutes: int = 15) -> StoredSession:
    now = datetime.now(UTC).replace(microsecond=0)
    return StoredSession(
        username=username,
        is_admin=False,
        access_token=f"access-{username}",
        access_expires_at=now + timedelta(minutes=minutes),
        refresh_token=f"refresh-{username}",
        refresh_expires_at=now + timedelta(days=30),
    )


def test_credentials_path_is_under_the_config_dir() -> None:
    assert credentials_path() == locations.config_dir() / "credentials.json"
    assert CredentialStore().path == credentials_path()


def test_empty_store() -> None:
    store = CredentialStore()
    assert store.get("http://a") is None
    assert store.default_server() is None
    assert store.remove("http://a") is None


def test_put_get_remove_round_trip() -> None:
    store = CredentialStore()
    alice = _session("alice")
    store.put("http://a:8000", alice)
    assert store.get("http://a:8000") == alice
    assert CredentialStore().get("http://a:8000") == alice  # a fresh store reads the file
    assert store.get("http://b:8000") is None

    assert store.remove("http://a:8000") == alice
    assert store.get("http://a:8000") is None
    assert store.remove("http://a:8000") is None
    # The server logged out of stays the default: "not logged in to it", not "no server".
    assert store.default_server() == "http://a:8000"


def test_put_replaces_the_session_for_a_server() -> None:
    store = CredentialStore()
    store.put("http://a", _session("alice"))
    bob = _session("bob")
    store.put("http://a", bob)
    assert store.get("http://a") == bob


def test_from_tokens() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    tokens = TokenPair(
        access_token="at",
        access_expires_at=now + timedelta(minutes=10),
        refresh_token="rt",
        refresh_expires_at=now + timedelta(days=1),
        user=UserView(username="root", is_admin=True),
    )
    session = StoredSession.from_tokens(tokens)
    assert session == StoredSession(
        username="root",
        is_admin=True,
        access_token="at",
        access_expires_at=now + timedelta(minutes=10),
        refresh_token="rt",
        refresh_expires_at=now + timedelta(days=1),
    )
    assert 9 * 60 < session.access_valid_for() <= 10 * 60
    assert _session(minutes=-5).access_valid_for() < 0


def test_file_and_folder_permissions() -> None:
    store = CredentialStore()
    assert not store.path.parent.exists()
    store.put("http://a", _session())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    folder_mode = stat.S_IMODE(store.path.parent.stat().st_mode)
    assert folder_mode & 0o077 == 0, oct(folder_mode)
    store.put("http://b", _session("bob"))
    store.remove("http://a")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert not store.path.with_name("credentials.json.tmp").exists()


def test_permissions_are_tightened_on_rewrite() -> None:
    store = CredentialStore()
    store.put("http://a", _session())
    os.chmod(store.path, 0o644)
    store.put("http://a", _session("bob"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_secrets_are_on_disk_only_in_the_credentials_file() -> None:
    store = CredentialStore()
    store.put("http://a", _session("alice"))
    text = store.path.read_text(encoding="utf-8")
    assert "refresh-alice" in text
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["credentials.json"]


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"[]", b"null", b'{"servers": {"http://a": {"username": 1}}}', b"\xff\xfe"],
)
def test_corrupt_file_reads_as_empty(content: bytes) -> None:
    store = CredentialStore()
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(content)
    assert store.get("http://a") is None
    assert store.default_server() is None
    alice = _session()
    store.put("http://a", alice)  # and it can be written over
    assert store.get("http://a") == alice


def test_unknown_fields_are_ignored() -> None:
    store = CredentialStore()
    alice = _session()
    store.put("http://a", alice)
    data = store.path.read_text(encoding="utf-8").replace('"default"', '"future": 1, "default"', 1)
    store.path.write_text(data, encoding="utf-8")
    assert store.get("http://a") == alice
    assert store.default_server() == "http://a"


def test_default_server_follows_puts_and_removes() -> None:
    store = CredentialStore()
    store.put("http://a", _session("alice"))
    assert store.default_server() == "http://a"
    store.put("http://b", _session("bob"))
    assert store.default_server() == "http://b"
    store.put("http://c", _session("carol"))
    assert store.default_server() == "http://c"

    store.remove("http://a")  # not the default: it stays
    assert store.default_server() == "http://c"
    store.remove("http://c")  # the default: moves to one that's left
    assert store.default_server() == "http://b"
    store.put("http://a", _session("alice"))
    assert store.default_server() == "http://a"
    store.remove("http://a")
    assert store.default_server() == "http://b"
    store.remove("http://b")  # the last: it stays the server meant, now logged out
    assert store.default_server() == "http://b"
    assert store.get("http://b") is None


def test_store_at_an_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "creds.json"
    store = CredentialStore(path)
    store.put("http://a", _session())
    assert path.is_file()
    assert not credentials_path().exists()
    with store.locked():
        assert path.with_name("creds.json.lock").is_file()


_TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy")
else:
    print("acquired")
"""


def _try_lock(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


def test_locked_excludes_another_process() -> None:
    store = CredentialStore()
    lock = store.path.with_name("credentials.json.lock")
    with store.locked():
        assert lock.is_file()
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert _try_lock(lock) == "busy"
    assert _try_lock(lock) == "acquired"
    with store.locked():
        assert _try_lock(lock) == "busy"
    assert _try_lock(lock) == "acquired"


def test_locked_releases_on_error() -> None:
    store = CredentialStore()
    lock = store.path.with_name("credentials.json.lock")
    with pytest.raises(RuntimeError, match="boom"), store.locked():
        raise RuntimeError("boom")
    assert _try_lock(lock) == "acquired"


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        ("0.5s", timedelta(milliseconds=500)),
        (" 10 M ", timedelta(minutes=10)),
        ("1D", timedelta(days=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(text, allow_never=True) == expected


@pytest.mark.parametrize("text", ["never", "NEVER", " never ", "none", "0"])
def test_never_when_allowed(text: str) -> None:
    assert parse_duration(text, allow_never=True) is None


def test_never_refused_when_not_allowed() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("never")
    assert str(caught.value) == (
        "'never' is not a duration; use a number and a unit (s, m, h, d or w)"
    )


@pytest.mark.parametrize("text", ["0s", "0m", "0.0h", "0w"])
def test_zero_is_refused(text: str) -> None:
    for allow_never in (False, True):
        with pytest.raises(ValueError) as caught:
            parse_duration(text, allow_never=allow_never)
        assert str(caught.value) == f"{text!r} must be longer than zero"


@pytest.mark.parametrize("text", ["abc", "5y", "", "10", "-5m", "1.h", ".5h", "5 m s", "m5"])
def test_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == (
        f"{text!r} is not a duration; use a number and a unit (s, m, h, d or w)"
    )
    with pytest.raises(ValueError) as caught:
        parse_duration(text, allow_never=True)
    assert str(caught.value).endswith("(s, m, h, d or w) or 'never'")


def test_duration_param_type() -> None:
    @click.command()
    @click.option("--ttl", type=Duration(allow_never=True), default="30d")
    @click.option("--timeout", type=Duration(), default=None)
    def command(ttl: timedelta | None, timeout: timedelta | None) -> None:
        click.echo(f"{ttl!r} {timeout!r}")

    runner = CliRunner()
    result = runner.invoke(command, [])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{timedelta(days=30)!r} None"

    result = runner.invoke(command, ["--ttl", "never", "--timeout", "90s"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"None {timedelta(seconds=90)!r}"

    result = runner.invoke(command, ["--timeout", "never"])
    assert result.exit_code == 2
    assert "'never' is not a duration" in result.output

    result = runner.invoke(command, ["--ttl", "5y"])
    assert result.exit_code == 2
    assert "'5y' is not a duration" in result.output
    assert "or 'never'" in result.output


def test_duration_convert_passes_timedeltas_through() -> None:
    kind = Duration()
    assert kind.convert(timedelta(hours=1), None, None) == timedelta(hours=1)
    assert kind.convert(None, None, None) is None
    with pytest.raises(click.BadParameter, match="must be longer than zero"):
        kind.convert("0s", None, None)
