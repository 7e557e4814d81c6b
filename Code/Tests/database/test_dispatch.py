"""The monitor's dispatch tables: `Modules/database/dispatch.py`.

Every entry names the answer the registry's handler names, with the
registry's flags; every operation that reaches the monitor is in exactly
the table of its role; the admin table is reachable only through `Admin`.
"""

from Modules import operations
from Modules.database import dispatch


def test_every_table_entry_names_an_answer_with_the_registry_flags():
    for phase, table in dispatch.TABLES.items():
        for name, entry in table.items():
            op = operations.get(name)
            assert op.role == phase and op.reaches_monitor
            assert entry.answer is getattr(entry.answers, op.handler)
            assert (entry.once, entry.no_reply, entry.phase) == (op.once, not op.replies,
                                                                 op.phase)
    listed = {name for table in dispatch.TABLES.values() for name in table}
    assert listed == {op.name for op in operations.OPERATIONS if op.reaches_monitor}


def test_the_admin_phase_is_entered_only_by_admin_and_shares_nothing_with_users():
    entering = [entry.operation.name for table in dispatch.TABLES.values()
                for entry in table.values() if entry.phase == operations.ADMIN]
    assert entering == ["Admin"]
    admin = set(dispatch.TABLES[operations.ADMIN])
    assert admin and not admin & set(dispatch.TABLES[operations.USER])
    assert not admin & set(dispatch.TABLES[operations.LOGIN])
    assert dispatch.TABLES[operations.CLOSED] == {}


def test_the_description_lists_every_phase_and_entry():
    text = dispatch.describe_tables()
    for phase, table in dispatch.TABLES.items():
        assert f"{phase}:" in text
        for name in table:
            assert f"  {name} " in text
