"""How this client's WebRTC channels find a path: STUN/TURN servers and host addresses.

Both come from ``config.toml``::

    ice_servers = [{urls = "stun:stun.example.org:3478"}]
    ice_host_addresses = ["10.0.0.5"]      # or SLEAP_RTC_ICE_HOSTS=10.0.0.5

aiortc gathers host candidates for the whole process, so pinned host addresses hold
for every channel this process opens; that is why they are read once, here.
"""

from __future__ import annotations

from typing import Any

from sleap_rtc.client.config import ConfigError, load_config


def ice_servers() -> list[dict[str, Any]]:
    """The configured ICE servers (validated), after pinning the host addresses."""
    from sleap_rtc.transport.webrtc import host_addresses_from_env, pin_host_addresses

    config = load_config()
    hosts = config.get("ice_host_addresses") or host_addresses_from_env()
    if hosts:
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ConfigError(
                'ice_host_addresses in config.toml must be a list of addresses, e.g. ["10.0.0.5"]'
            )
        pin_host_addresses(hosts)
    servers = config.get("ice_servers") or []
    if not isinstance(servers, list) or not all(
        isinstance(s, dict) and "urls" in s for s in servers
    ):
        raise ConfigError(
            "ice_servers in config.toml must be a list of tables with urls, e.g. "
            'ice_servers = [{urls = "stun:stun.example.org:3478"}]'
        )
    return servers
