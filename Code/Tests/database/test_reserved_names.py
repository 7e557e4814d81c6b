"""Tests for Modules/database/reserved_names.py: a deleted account's name, kept back.

On real SQLite files: remove_account keeps the name back in the same
step (a creation cut off by a crash, never logged in, does not); a new
account of that name is refused with a sentence saying until when, and
accepted once the days have passed, at once with the setting at 0, or
after a release; the setting must be a whole number of days. Against a
real database process: the user's delete-account and the operator's
delete-user both keep the name back, Create answers create_failed with
the sentence, the operator's Setting refuses a bad number of days with
one sentence, and ReleaseName frees the name (and says when there was
nothing to release).
"""

import pytest

from Modules import rules
from Modules.database import administration, reserved_names, statistics, storage
from Modules.database.link import DbError
from Tests.support import PASSWORD
from Tests.support.monitor import admin_link, login_link, user_link

NOW = 1_800_000_000.0
DAY = 86400


def delete(db, name, now=NOW, logged_in=True):
    if logged_in:
        statistics.record_login(db, name, "127.0.0.1", now, True,
                                statistics.LedgerLimits())
    for step in (storage.mark_deleting, storage.remove_password):
        step(db, name)
    storage.remove_account(db, name, now)


def test_a_deleted_name_is_kept_back_for_the_set_days(db):
    storage.create_account(db, "alice", "hash", NOW - DAY)
    delete(db, "alice")
    with pytest.raises(reserved_names.NameReserved) as refused:
        storage.create_account(db, "alice", "hash", NOW + 29 * DAY)
    sentence = refused.value.sentence
    assert "'alice' belonged to an account that was deleted" in sentence
    assert "2027-02-14" in sentence and "Choose another username" in sentence
    assert storage.create_account(db, "alice", "hash", NOW + 30 * DAY + 1) > 0
    assert reserved_names.reserved_until(db, "alice") is None     # forgotten once used


def test_the_setting_applies_to_names_already_kept_back(db):
    storage.create_account(db, "bob", "hash", NOW)
    delete(db, "bob")
    administration.set_setting(db, reserved_names.SETTING, "2", NOW, "root")
    with pytest.raises(reserved_names.NameReserved):
        storage.create_account(db, "bob", "hash", NOW + DAY)
    administration.set_setting(db, reserved_names.SETTING, "0", NOW, "root")
    assert storage.create_account(db, "bob", "hash", NOW + 1) > 0


def test_a_creation_never_logged_in_leaves_the_name_free(db):
    storage.create_account(db, "torn", "hash", NOW)
    delete(db, "torn", logged_in=False)
    assert reserved_names.reserved_until(db, "torn") is None
    assert storage.create_account(db, "torn", "hash", NOW + 1) > 0


def test_release(db):
    storage.create_account(db, "carol", "hash", NOW)
    delete(db, "carol")
    assert reserved_names.release_kept(db, "carol", NOW + 1) is True
    assert reserved_names.release_kept(db, "carol", NOW + 1) is False
    assert storage.create_account(db, "carol", "hash", NOW + 2) > 0


@pytest.mark.parametrize("value, expected", [("30", "30"), (" 7 ", "7"), ("0", "0"),
                                             ("007", "7"), ("", ""), ("3650", "3650")])
def test_days_setting_accepts_whole_days(value, expected):
    assert reserved_names.days_setting(value) == expected


@pytest.mark.parametrize("value", ["-1", "1.5", "thirty", "3651", "٣", "1e3"])
def test_days_setting_refuses_anything_else_in_one_sentence(value):
    with pytest.raises(rules.RuleError) as refused:
        reserved_names.days_setting(value)
    assert refused.value.reason == ("reserved_name_days is a whole number of days from 0 "
                                    "to 3650 (0: a deleted account's name is free at once).")


# -- through a real database process -------------------------------------------------------

def create(config, name):
    return login_link(config).call("Create", username=name, password=PASSWORD)


def test_both_deletions_keep_the_name_and_create_says_why(database):
    _, config = database
    user_link(config, "alice").call("DeleteAccount", confirm=True)
    user_link(config, "bob")
    admin = admin_link(config)
    admin.call("DeleteUser", username="bob")
    for name in ("alice", "bob"):
        reply = create(config, name)
        assert reply["outcome"] == "create_failed"
        assert f"The name '{name}' belonged to an account that was deleted" in \
            reply["reason"]
    assert create(config, "carol")["outcome"] == "created"


def test_the_operator_sets_the_days_and_releases_a_name(database):
    _, config = database
    admin = admin_link(config)
    assert admin.call("Setting", name="reserved_name_days")["value"] == "30"
    with pytest.raises(DbError) as refused:
        admin.call("Setting", name="reserved_name_days", value="a month")
    assert refused.value.code == "bad_request" and "whole number of days" in \
        refused.value.reason
    user_link(config, "alice").call("DeleteAccount", confirm=True)
    with pytest.raises(DbError) as refused:
        admin.call("ReleaseName", username="zed")
    assert refused.value.code == "not_found"
    assert admin.call("ReleaseName", username="alice")["released"] is True
    assert create(config, "alice")["outcome"] == "created"
    assert admin.call("Setting", name="reserved_name_days", value="0")["value"] == "0"
    user_link(config, "alice").call("DeleteAccount", confirm=True)
    assert create(config, "alice")["outcome"] == "created"
