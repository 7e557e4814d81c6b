"""The server's static private key, held by the database process alone (issue 15).

The login process parses every unauthenticated byte, so it must not hold
the key that proves the server is the server. As OpenSSH's monitor signs
for its unprivileged child, the database process performs the one
operation the handshake needs the static key for: in Noise NX the
responder's `es`, the X25519 agreement of the static key with the
client's ephemeral key. The login process sends that ephemeral key
(KeyAgree) and gets the shared secret back; it holds only the public
half (`noise.DelegatedKey`).

Once per login process: the process is identified by the kernel, not by
anything it says (SO_PEERCRED's pid and the start time in
/proc/PID/stat, which together never repeat), and `KeyHolder` remembers
the last `REMEMBERED` of them. A login process taken over by an attacker
can so get one agreement, for a key of its choosing, in place of the one
its own connection's handshake needed: it can neither read the key nor
use it for another connection (each connection has its own process).
The daemon passes the key to the database process only (its config);
login and user processes are never given it. With the data dir encrypted
at rest the daemon cannot read the key at all: this process unwraps
`server_key` itself with the database key (`load_wrapped`).

Talks to: the monitor's login connections (`KeyAnswers`, mixed into
`answers.LoginAnswers`), /proc. Fails with a Refusal: "refused" for a
second agreement (logged as a warning), "bad_request" for a key that is
not an X25519 point, "unavailable" if no key was configured.
"""

import logging
import os
from collections import OrderedDict

from Modules import identity
from Modules.database import at_rest
from Modules.wire import noise
from Modules.wire.errors import ProtocolError

log = logging.getLogger("parley.database")

REMEMBERED = 65536      # login processes whose agreement is remembered (the oldest go)


def process_identity(pid):
    """(pid, start time in clock ticks since boot) of a live process, or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(pid), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def load_wrapped(data_dir, db_key):
    """The private key of `data_dir/server_key` kept wrapped under `db_key`, or None."""
    path = os.path.join(data_dir, identity.KEY_FILE_NAME)
    try:
        with open(path, "rb") as handle:
            content = handle.read(identity.MAX_KEY_FILE_SIZE)
    except FileNotFoundError:
        return None
    if at_rest.is_wrapped(content):
        content = at_rest.unwrap(db_key, identity.KEY_FILE_NAME, content, path)
    return identity.decode_private_key(path, content)


class KeyHolder:
    """The static key pair and the login processes that have used it."""

    def __init__(self, private, remembered=REMEMBERED):
        self.key = noise.KeyPair(private)
        self.remembered = remembered
        self._used = OrderedDict()

    @classmethod
    def from_config(cls, config, db_key=None):
        """From the daemon's config, or (a key wrapped under the database key,
        which the daemon cannot read) from the data dir's `server_key` itself."""
        private = config.get("server_private_key")
        if private is None and db_key is not None:
            private = load_wrapped(config["data_dir"], db_key)
        return cls(private) if private else None

    def first_use(self, process):
        """True (and remembered) if `process` has not had its agreement yet."""
        if process is None or process in self._used:
            return False
        self._used[process] = True
        while len(self._used) > self.remembered:
            self._used.popitem(last=False)
        return True

    def agree(self, ephemeral):
        """The agreement with the raw public key `ephemeral` (RemoteProtocolError
        for a key that is not a usable point)."""
        return self.key.dh(ephemeral)


class KeyAnswers:
    """KeyAgree for a login connection (mixed into LoginAnswers: uses `self.conn`,
    `self.monitor` and `self.refusal`)."""

    async def key_agree(self, args):
        holder = getattr(self.monitor, "server_key", None)
        if holder is None:
            return self.refusal("unavailable", "This server's key is not available.")
        process = process_identity(self.conn.peer_pid())
        if not holder.first_use(process):
            log.warning("a second key agreement asked by login process %s (%s); refused",
                        process[0] if process else "?", self.conn.peer)
            return self.refusal("refused", "This login process has had its key agreement.")
        try:
            shared = holder.agree(bytes.fromhex(args["ephemeral"]))
        except (ProtocolError, ValueError):
            return self.refusal("bad_request", "The handshake key is not a usable X25519 "
                                "public key.")
        return {"shared": shared.hex()}
