"""Parley's code, in layers that match its processes (docs/DESIGN.md has the map).

* `rules`, `operations`: what values may be, and the registry of every
  operation (fields, limits, replies, flags, handlers);
* `wire/`: the sans-IO stack every process speaks (framing, serializers,
  Noise, the secure channel, the connection, state machines, errors);
* `identity`, `runtime`: the server's key and the client's pins; what
  every server process does first;
* `database/`: the monitor process and everything only it touches;
* `server/`: the daemon, the login and user processes, spares, options;
* `client/`: the terminal client.

Imports run downward only and never in a circle (`Tests/test_modules.py`).
"""
