"""The sans-IO stack every Parley process speaks: bytes in, events out, bytes back.

framing (length-prefixed frames), serializers (JSON and binary packets),
noise and aead (the Noise NX handshake, ChaCha20-Poly1305), channel (the
secure channel: framing + Noise + chunking), protocol (the client-server
connection and its one transition table), machine (the table-driven state
machine every protocol object uses) and errors (LocalProtocolError /
RemoteProtocolError). Nothing here opens a socket or a file; nothing here
imports from the server, database or client packages.
"""
