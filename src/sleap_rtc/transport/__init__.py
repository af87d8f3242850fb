"""Channels between a client and a worker: WebRTC data channels, or relay through the server.

Transports move messages; they know nothing of jobs. Both kinds are
:class:`~sleap_rtc.transport.base.Channel`: ordered text messages, closed once.
"""

from sleap_rtc.transport.base import Channel, ChannelClosed

__all__ = ["Channel", "ChannelClosed"]
