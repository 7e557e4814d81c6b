"""Helpers for the tests of files between people (issue 14).

`known_bytes(size)` is recognisable content (a mark every 64 bytes, so a
scan can tell whether any of it reached the disk as plaintext);
`plaintext_on_disk(directory, mark)` lists the files under `directory`
that hold it; `raw_upload(client, ...)` sends a file through a logged-in
`RawClient` the way the real client does, but with any name, size or
announced hash (what a hostile or broken client would send); `sha256`.
"""

import base64
import hashlib
import os

from Tests.support.clients import request

MARK = b"PARLEY-KNOWN-PLAINTEXT-"
CHUNK = 64 * 1024


def known_bytes(size, mark=MARK):
    pattern = (mark + b"." * (64 - len(mark))) * (size // 64 + 1)
    return pattern[:size]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def plaintext_on_disk(directory, mark=MARK):
    """The paths under `directory` whose bytes hold `mark` (read in pieces, with
    an overlap, so a mark across two pieces is found too)."""
    found = []
    for folder, _dirs, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            try:
                with open(path, "rb") as handle:
                    tail = b""
                    while block := handle.read(1024 * 1024):
                        if mark in tail + block:
                            found.append(path)
                            break
                        tail = block[-len(mark):]
            except (FileNotFoundError, PermissionError):
                continue            # a file that went meanwhile (a -wal, a .part)
    return found


def raw_upload(client, to, name, data, announced=None, note=None):
    """Offer, send every chunk and finish; the FileDone event (Result or Error),
    or the FileOffer's Error if the offer was refused."""
    fields = {"to": to, "name": name, "size": len(data),
              "sha256": announced or sha256(data)}
    if note is not None:
        fields["note"] = note
    offer = request(client, "FileOffer", **fields)
    if offer.op != "Result":
        return offer
    upload = offer.data["upload"]
    for index in range(offer.data["chunks"]):
        piece = data[index * CHUNK:(index + 1) * CHUNK]
        answer = request(client, "FileChunk", upload=upload, index=index,
                         data=base64.b64encode(piece).decode("ascii"))
        assert answer.op == "Result", answer
    return request(client, "FileDone", upload=upload)
