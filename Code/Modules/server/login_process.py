"""The login process: one per new connection, named `parley: login HOST:PORT`.

Talks to: the client over the TCP socket the daemon accepted (Noise
handshake, Version exchange, the login dialogue of
`Modules/server/login_dialogue.py`); the database process in the *login* role
(Hello, Exists, Verify, Create, SetPassword, nothing else); the daemon
through a one-way pipe that carries the hand-off. The operator's greeting
comes with the Hello's reply and goes in the first username prompt; the
message of the day comes with the reply that logs the user in and goes in
the Welcome.

On success it sends Welcome to the client, then hands the live connection
to the daemon (transport keys and nonces, undecoded bytes, serializer,
the user's ticket) and exits without closing the socket; the daemon starts
the user process with it. A user process that deleted its account hands
the connection back the same way, and a login process started with that
state resumes at the username prompt.

Its log lines carry the connection's id (`c17`, given by the daemon), and
so does the `peer` it introduces itself with to the database ("c17
127.0.0.1:53422"), so that the database's lines about this login carry it
too.

Failures: the whole login, handshake included, must finish before the
deadline (60 s by default), else the client is told and the connection
closed. A protocol violation, the last wrong password, or an unreachable
database closes this one connection with a clear Error; nothing else is
affected. Passwords pass through memory only on their way to the database.
"""

import logging
import signal
import socket
import time

from Modules.database.link import DbError, DbLink, DbUnavailable
from Modules.runtime import (
    close_connection,
    lower_priority,
    restore_default_signals,
    start_process,
)
from Modules.server import containment
from Modules.server import login_dialogue as dialogue_mod
from Modules.wire import channel as channel_mod
from Modules.wire import noise, protocol
from Modules.wire.errors import ProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.serializers import Packet

log = logging.getLogger("parley.login")
SHUTDOWN_POLL = 0.25   # seconds between checks for a shutdown request


class Stop(Exception):
    """End this login: `packet` says what the client is told, if anything."""

    def __init__(self, packet=None):
        super().__init__()
        self.packet = packet


# Ways a login can end that earn its address a penalty from the daemon (as
# OpenSSH's PerSourcePenalties): trying one new account after another,
# answering forever, breaking the protocol. Wrong passwords are the monitor's
# throttle's business, not these.
PENALISED = frozenset({"registration_closed", "too_many_steps", "bad_login", "bad_request",
                       "illegal_move", "bad_frame", "bad_chunk", "bad_batch",
                       "bad_encoding", "decrypt_failed", "bad_handshake", "bad_public_key"})


def host_of(peer):
    """'127.0.0.1' from '127.0.0.1:53422' ('::1' from '::1:53422'): the throttle's key."""
    return peer.rsplit(":", 1)[0]


def error_packet(code, reason, fatal=True):
    return Packet("Error", {"code": code, "reason": reason, "fatal": fatal})


def system_packet(event, message):
    return Packet("System", {"event": event, "message": message})


_ACTIONS = {dialogue_mod.CheckUser: "Exists", dialogue_mod.VerifyPassword: "Verify",
            dialogue_mod.CreateAccount: "Create", dialogue_mod.ChangePassword: "SetPassword"}


class LoginSession:
    """The loop around the sans-IO connection and dialogue objects."""

    def __init__(self, sock, peer, config, resume_state=None):
        self.sock, self.peer, self.config = sock, peer, config
        conn_id = config.get("conn_id")
        self.described = f"{conn_id} {peer}" if conn_id else peer   # for the database's log
        self.deadline = config["deadline"]
        self.dialogue = dialogue_mod.LoginDialogue(config.get("max_attempts", 3))
        self.db = DbLink(config["db_socket"], cancelled=lambda: self.shutdown_requested)
        self.ticket = self.greeting = self.motd = None
        self.hello_rid = None             # a Hello sent whose reply is not read yet
        self.penalty = None               # why the address earned one, if it did
        self.shutdown_requested = False   # set by SIGTERM, acted on in _recv
        if resume_state is None:
            self.key = noise.DelegatedKey(config["server_public_key"])
            self.conn = protocol.Connection.server(self.key)
        else:
            self.conn = protocol.Connection.from_state(resume_state)

    # -- the loop --------------------------------------------------------------
    def run(self):
        """A hand-off dict on success, None when the connection should close."""
        try:
            if self.conn.state == protocol.SESSION:     # resumed: the prompt comes now
                self._say_hello()
                self.send_all(self.dialogue.start(self.greeting))
            else:          # the Hello's round trip overlaps the client's first message
                self._start_hello()
            return self._loop()
        except Stop as stop:
            if stop.packet is not None:
                log.info("login from %s ended: %s", self.peer, stop.packet.data.get("code")
                         or stop.packet.data.get("event"))
                self._note_penalty(stop.packet.data.get("code"))
                self._send_quietly(stop.packet)
            return None
        except (DbUnavailable, DbError):
            log.warning("login from %s ended: the database is not available", self.peer)
            self._send_quietly(error_packet("unavailable", "The server's database is not "
                                            "available; try again in a moment."))
            return None
        except ProtocolError as error:
            log.info("login from %s ended: %s", self.peer, error.reason)
            self._note_penalty(error.code)
            self._send_quietly(error_packet(error.code, error.reason))
            return None
        finally:
            self.db.close()

    def _note_penalty(self, code):
        if code in PENALISED:
            self.penalty = code

    def _loop(self):
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_data(self._recv())
            elif event is CLOSED:
                raise Stop()
            else:
                result = self._handle(event)
                if result is not None:
                    return result

    def _recv(self):
        """Bytes from the client; Stop at the deadline or when asked to shut down.

        Waits in short slices so that a SIGTERM (which only sets a flag: a
        handler that raised could interrupt an encryption half done) is seen
        within a quarter of a second.
        """
        while True:
            if self.shutdown_requested:
                raise Stop(system_packet("shutdown", "The server is shutting down."))
            remaining = self.deadline - time.time()
            if remaining <= 0:
                raise Stop(self._timeout_packet())
            self.sock.settimeout(min(remaining, SHUTDOWN_POLL))
            try:
                return self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""

    def _timeout_packet(self):
        return system_packet("timeout", "No login within the time allowed; "
                                        "the connection is closed.")

    # -- events ------------------------------------------------------------------
    def _handle(self, event):
        if isinstance(event, channel_mod.ClientHello):
            self._agree_with(self.conn.channel.remote_ephemeral)
            self._write(self.conn.accept())
        elif isinstance(event, protocol.BadPacket):
            raise Stop(error_packet("bad_request", event.reason))
        elif event.op == "Version":
            self._answer_version(event)
        elif event.op == "Login":
            return self._run_outputs(self.dialogue.receive(event))
        return None   # Ack sent just before an account deletion: nothing to do

    def _answer_version(self, offer):
        reply = protocol.choose_version(offer)
        self.send_all([reply])
        if reply.op == "Error":
            raise Stop()
        self._greeted()
        self.send_all(self.dialogue.start(self.greeting))

    def _run_outputs(self, outputs):
        pending = list(outputs)
        while pending:
            item = pending.pop(0)
            if isinstance(item, Packet):
                self.send_all([item])
            elif isinstance(item, dialogue_mod.LoggedIn):
                return self._logged_in(item)
            elif isinstance(item, dialogue_mod.Refused):
                raise Stop(error_packet(item.code, item.reason))
            else:
                pending = self._perform(item) + pending
        return None

    def _perform(self, action):
        """Carry out a dialogue action with the database; the dialogue's next outputs.

        The monitor names the outcome (exists, verified, busy, ...) in the
        reply, and the dialogue takes it as it is.
        """
        reply = self._db_call(_ACTIONS[type(action)], **action._asdict())
        self.ticket, self.motd = reply.get("ticket"), reply.get("motd")
        return self.dialogue.outcome(reply["outcome"], reply.get("reason"),
                                     reply.get("retry_after"))

    def _say_hello(self):
        """Connect to the database as a login connection and wait for the
        Hello's reply. A database that goes away during the Hello is being
        restarted (a dying one may even accept the connection first): try
        again until it answers, for a while."""
        give_up_at = time.monotonic() + self.db.connect_timeout
        while True:
            self._send_hello()
            try:
                self._take_hello_reply()
                return
            except DbUnavailable:
                if time.monotonic() > give_up_at or self.shutdown_requested:
                    raise
                log.warning("database connection lost during Hello; trying again")
                time.sleep(0.05)

    def _send_hello(self):
        """Connect and send the Hello without waiting for its reply: the next
        request goes after it, and its reply is read first (`_db_call`)."""
        self.db.connect()
        self.hello_rid = self.db.send_request("Hello", role="login", peer=self.described,
                                              address=host_of(self.peer))

    def _start_hello(self):
        """Send the Hello and go on: its reply is read before the next request's."""
        self._or_hello_again(self._send_hello)

    def _take_hello_reply(self):
        """The reply of the Hello sent last, if it is not read yet: the greeting."""
        if self.hello_rid is not None:
            reply = self.db.wait_for(self.hello_rid)
            self.hello_rid, self.greeting = None, reply.get("greeting")

    def _greeted(self):
        """The greeting, read now, with a new Hello if the database went away."""
        self._or_hello_again(self._take_hello_reply)

    def _or_hello_again(self, step):
        """`step` of the pipelined Hello, or, if the database went away meanwhile,
        the whole Hello again, waited for (with `_say_hello`'s retries)."""
        try:
            step()
        except DbUnavailable:
            log.warning("database connection lost during Hello; trying again")
            self._say_hello()

    def _agree_with(self, ephemeral):
        """The handshake's DH with the server's static key, done by the database
        process, which alone holds the key (issue 15; `database/server_key.py`)."""
        reply = self._db_call("KeyAgree", ephemeral=bytes(ephemeral).hex())
        self.key.agree(ephemeral, bytes.fromhex(reply["shared"]))

    def _db_call(self, op, **fields):
        """A database request, retried once over a new connection if the database
        process went away meanwhile (it is restarted by the daemon)."""
        try:
            rid = self.db.send_request(op, **fields)
            self._take_hello_reply()          # a pipelined Hello's reply comes first
            return self.db.wait_for(rid)
        except DbUnavailable:
            if op == "SetPassword":   # only the connection that verified may change it
                raise
            log.warning("database connection lost during %s; retrying once", op)
        self._say_hello()
        reply = self.db.call(op, **fields)
        if op == "Create" and reply["outcome"] == "create_failed":   # did our first try commit?
            verified = self.db.call("Verify", **fields)
            if verified["outcome"] == "verified":
                return {**verified, "outcome": "created"}
        return reply

    def _logged_in(self, result):
        welcome = {"user": result.username, "created": result.created}
        if self.motd:
            welcome["motd"] = self.motd
        self.send_all([Packet("Welcome", welcome)])
        log.info("%s logged in from %s", result.username, self.peer)
        return {"user": result.username, "ticket": self.ticket, "peer": self.peer,
                "state": self.conn.export_state()}

    # -- output ------------------------------------------------------------------
    def send_all(self, packets):
        self._write(b"".join(self.conn.send(p) for p in packets))

    def _write(self, data):
        self.sock.settimeout(max(0.1, self.deadline - time.time()))
        try:
            self.sock.sendall(data)
        except OSError:
            raise Stop() from None

    def _send_quietly(self, packet):
        """Best effort: encrypted if the handshake is done, else a plaintext notice."""
        try:
            self.sock.settimeout(1.0)
            if self.conn.state == protocol.HANDSHAKE:
                text = packet.data.get("message") or packet.data.get("reason", "")
                self.sock.sendall(self.conn.notice(text))
            elif self.conn.state == protocol.ERROR:
                self.sock.sendall(self.conn.farewell(packet))
            else:
                self.sock.sendall(self.conn.send(packet))
        except (OSError, ProtocolError):
            pass


def _on_sigterm(session):
    def handler(_signum, _frame):
        session.shutdown_requested = True
    return handler


def main(sock, peer, handoff, config, resume_state=None):
    """Entry point of a login process (a forkserver child)."""
    restore_default_signals(config.get("lifeline"))
    start_process(f"login {peer}", config)
    lower_priority()   # a login storm must not slow down live sessions
    containment.enter(config, "login")   # unprivileged, in an empty root, from here on
    session = LoginSession(sock, peer, config, resume_state)
    signal.signal(signal.SIGTERM, _on_sigterm(session))
    result = session.run()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if result is not None:
        handoff.send(result)
    else:
        close_connection(sock)
        if session.penalty is not None:
            handoff.send({"penalty": session.penalty})   # the daemon slows that address
    handoff.close()

