"""The server's rules over its tables, one module per area, callable without HTTP.

- :mod:`.accounts`: users, passwords, login sessions and their tokens.
- :mod:`.rooms`: rooms, memberships, invites, expiry.
- :mod:`.keys`: worker keys, and the authentication of a worker by its key.
- :mod:`.workers`: which worker ids a room knows, and whose key each belongs to.
- :mod:`.relay`: who may relay to whom, and what the receiver is told of the sender.
- :mod:`.names`: which names accounts, rooms and keys may have.

All but :mod:`.relay` are plain synchronous functions over one SQLAlchemy session;
the routes and sockets run them in a worker thread (:class:`~sleap_rtc.server.state.Database`)
and turn :class:`~sleap_rtc.server.errors.ApiError` into responses. A room a user
doesn't belong to is reported as not found, never as forbidden, so rooms of other
users stay invisible.
"""
