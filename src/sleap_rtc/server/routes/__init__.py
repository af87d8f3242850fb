"""The HTTP API, one router per area; :func:`sleap_rtc.server.app.create_app` mounts them all.

Routes check who is asking (:mod:`sleap_rtc.server.deps`), run the area's rules
(:mod:`sleap_rtc.server.service`) and shape the answer (:mod:`sleap_rtc.protocol.api`).
Every path is written out in full in its route, so a URL is found by searching for it.
"""
