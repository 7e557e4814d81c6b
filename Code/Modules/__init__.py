"""Parley server and client modules.

Sans-IO protocol objects (framing, serializers, noise, channel, protocol,
login dialogue), the storage layer, and the process entry points (daemon,
database, login, user) that wrap them in thin socket loops.
"""
