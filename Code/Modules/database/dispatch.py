"""The monitor's dispatch tables: per phase, every request a connection may make.

Like OpenSSH's monitor, every monitor connection is in a *phase* and may
send only the requests of its phase's table (`TABLES`). The tables are
built from the registry (`Modules/operations.py`) and the answer sets
(`answers.py`: new, login and user; `admin_answers.py`: admin). Each
entry carries the operation, the method that answers it and its flags:

* `once`: at most once per connection (Hello, Bind, Admin, Subscribe);
* `no_reply`: nothing is sent back (Ack);
* `phase`: the phase the connection enters when the request is *accepted*
  (Hello: login, Bind: user, Admin: admin, DeleteAccount: closed); until
  it has been answered nothing else is accepted
  (`Modules/database/connection.py`).

Talks to nothing; importing it fails loudly if the registry names a
handler that an answer set lacks.
"""

from typing import NamedTuple

from Modules import operations
from Modules.database.admin_answers import AdminAnswers
from Modules.database.answers import DaemonLinkAnswers, LoginAnswers, NewAnswers, UserAnswers


class Entry(NamedTuple):
    """One row of a role's table: the operation, its answer and its flags."""

    operation: operations.Operation
    answer: object              # the unbound coroutine method of the role's answer set
    answers: type               # the answer set it belongs to
    once: bool
    no_reply: bool
    phase: str | None


ANSWER_SETS = {operations.NEW: NewAnswers, operations.LOGIN: LoginAnswers,
               operations.USER: UserAnswers, operations.ADMIN: AdminAnswers,
               operations.DAEMON: DaemonLinkAnswers}


def _table(role):
    answers = ANSWER_SETS[role]
    return {op.name: Entry(op, getattr(answers, op.handler), answers, op.once,
                           not op.replies, op.phase)
            for op in operations.for_role(role)}


# phase -> {operation name: Entry}.  Every request a monitor connection may make.
TABLES = {role: _table(role) for role in ANSWER_SETS}
TABLES[operations.CLOSED] = {}


def describe_tables():
    """The tables as docs/DESIGN.md quotes them: one line per entry."""
    lines = []
    for phase, table in TABLES.items():
        lines.append(f"{phase}:" + ("" if table else " (nothing)"))
        for name, entry in table.items():
            flags = [flag for flag, on in (("once", entry.once), ("no reply", entry.no_reply))
                     if on] + ([f"phase -> {entry.phase}"] if entry.phase else [])
            lines.append(f"  {name:<14} {entry.answers.__name__}.{entry.operation.handler}"
                         + (f"  [{', '.join(flags)}]" if flags else ""))
    return "\n".join(lines)
