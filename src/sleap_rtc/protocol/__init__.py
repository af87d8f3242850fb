"""Typed wire messages: the server WebSocket (signaling) and, later, the job protocol."""
