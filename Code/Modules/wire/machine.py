"""One table per state machine: the legal moves, and an error that sticks.

Every state machine in Parley (the connection of `protocol`, the login
dialogue, the user process's session, the monitor's subscriptions) keeps
its state in a `Machine`: `table` maps `(state, event)` to the next state,
and nothing else may change the state. A move that is not in the table
raises `illegal_move()` from `errors` (the class the caller names:
`LocalProtocolError` when our own side tried it, `RemoteProtocolError`
when the peer did), naming the machine, the state and the event; the
machine is then in `ERROR`, and every later move raises the same error
again (`sticky`, as h11's connections do). No table may have a row that
starts from `ERROR`.

The channel's own frame table (`channel.MOVES`) predates this helper and
keeps `errors.sticky` for its methods; the rule is the same.

Talks to nothing; raises only ProtocolError subclasses.
"""

from Modules.wire.errors import LocalProtocolError, illegal_move

ERROR = "ERROR"


class Machine:
    """The state of one object, moved only through `table`."""

    __slots__ = ("name", "table", "state", "error", "failed_in")

    def __init__(self, name, table, state):
        self.name, self.table, self.state = name, table, state
        self.error = None       # the first ProtocolError, raised again by every move
        self.failed_in = None   # the state the error happened in

    def allows(self, event):
        """Whether `event` is a legal move now (no error is recorded either way)."""
        return self.error is None and (self.state, event) in self.table

    def next_state(self, event, error_class=LocalProtocolError, who=None, what=None):
        """The state `event` leads to, without moving; an illegal event fails the machine.

        `who` and `what` name the mover and the event in the error when they
        read better than the machine's name and the raw event.
        """
        target = self.table.get((self.state, event))
        if target is not None:            # no table has a row from ERROR
            return target
        self.check()                      # after an error: that error again
        raise self.fail(illegal_move(error_class, who or self.name, self.state,
                                     event if what is None else what))

    def move(self, event, error_class=LocalProtocolError, who=None, what=None):
        """Make the move; the new state."""
        target = self.table.get((self.state, event))
        if target is None:
            target = self.next_state(event, error_class, who, what)   # raises
        self.state = target
        return target

    def fail(self, error):
        """Record `error` (the first one sticks) and enter ERROR; the error to raise."""
        if self.error is None:
            self.error, self.failed_in = error, self.state
        self.state = ERROR
        return self.error

    def check(self):
        """Raise the recorded error, if any."""
        if self.error is not None:
            raise self.error

    def __repr__(self):
        return f"<Machine {self.name} {self.state}>"
