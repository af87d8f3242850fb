"""Typed wire messages and the rules for using them, with no I/O.

:mod:`.signaling` is the server WebSocket (auth, rooms, presence, relay),
:mod:`.api` the server's HTTP bodies, :mod:`.jobs` the job protocol's messages
between a client and a worker, :mod:`.session` the conversation rules of that
protocol (HELLO first, replies matched by ``request_id``, keepalives) and
:mod:`.transfer` the windows and checks of its file transfers.
"""
