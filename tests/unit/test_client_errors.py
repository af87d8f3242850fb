"""What the CLI says when the address is wrong: nothing answers, or something that isn't
a sleap-rtc server does (its page is never printed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from sleap_rtc.cli import cli

PAGE = b"<html><body><h1>Welcome to nginx!</h1>" + b"x" * 500 + b"</body></html>"


class _Page(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(404)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture()
def web_server() -> Iterator[str]:
    """A real HTTP server that is not sleap-rtc (a web server's 404 page for everything)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_login_to_a_server_that_is_not_sleap_rtc_says_so_without_its_page(
    web_server: str,
) -> None:
    result = CliRunner().invoke(
        cli, ["login", "--server", web_server, "-u", "ana", "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == 1
    assert "isn't a sleap-rtc answer" in result.output and "<html" not in result.output


def test_a_mistyped_server_is_unreachable_or_not_sleap_rtc_rather_than_not_logged_in(
    web_server: str,
) -> None:
    nothing = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(cli, ["rooms", "list", "--server", nothing])
    assert result.exit_code == 1
    assert f"can't reach the sleap-rtc server at {nothing}" in result.output
    assert "not logged in" not in result.output
    result = CliRunner().invoke(cli, ["rooms", "list", "--server", web_server])
    assert result.exit_code == 1
    assert f"{web_server} answered, but it is not a sleap-rtc server" in result.output
    assert "<html" not in result.output
