"""The server: accounts, rooms, worker keys, presence, signaling and relay (``sleap-rtc server``).

It never runs jobs and never sees files. Where things are:

- :mod:`.app`: the app factory (state, lifespan, body limit, error bodies).
- :mod:`.routes`: the HTTP API, one router per area; :mod:`.sockets`: the WebSockets.
- :mod:`.deps`: what routes and sockets get from FastAPI (state, database, hub, user).
- :mod:`.service`: the rules, one module per area (the relay's included).
- :mod:`.hub`: live connections; :mod:`.sweep`: upkeep while running;
  :mod:`.limits`: body size and login limits.
- :mod:`.auth`, :mod:`.models`, :mod:`.db`: secrets and tokens, tables, the database.

Importing this package imports nothing: the server's dependencies (FastAPI,
SQLAlchemy, ...) are an extra that clients and workers don't install.
"""
