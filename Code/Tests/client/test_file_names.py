"""Tests for Modules/client/file_names.py: other people's file names made safe.

Pure: path separators of both kinds, leading and trailing dots and spaces,
control, format and bidirectional characters, characters Windows refuses,
reserved device names, over-long names (the extension kept), names that
end up empty; and the joined path always directly inside the directory.
"""

import os

import pytest

from Modules.client.file_names import NAME_BYTES_MAX, safe_file_name, target_path


@pytest.mark.parametrize("name, safe", [
    ("report.pdf", "report.pdf"),
    ("Übersicht 2027.ods", "Übersicht 2027.ods"),
    ("../../.bashrc", "bashrc"),
    ("/etc/passwd", "passwd"),
    ("C:\\Windows\\win.ini", "win.ini"),
    ("dir/", "dir"),
    ("..", "file-7"),
    ("", "file-7"),
    (" . ", "file-7"),
    ("name. . ", "name"),
    ("\x1b]0;title\x07x", "_]0;title_x"),
    ("line\nbreak\u2028", "line_break_"),
    ("evil\u202etxt.exe", "evil_txt.exe"),
    ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("Com1.tar.gz", "_Com1.tar.gz"),
    ("console.txt", "console.txt"),
])
def test_names_are_made_one_plain_name(name, safe):
    assert safe_file_name(name, 7) == safe


def test_a_long_name_is_cut_to_255_bytes_keeping_its_extension():
    cut = safe_file_name("é" * 300 + ".pdf", 1)
    assert cut.endswith(".pdf") and len(cut.encode()) <= NAME_BYTES_MAX
    plain = safe_file_name("x" * 400, 1)
    assert plain == "x" * NAME_BYTES_MAX


@pytest.mark.parametrize("name", ["../../.bashrc", "/abs/path", "..\\..\\x", "a/../../b",
                                  "..", "\x00"])
def test_the_target_is_always_directly_in_the_directory(tmp_path, name):
    path = target_path(str(tmp_path), name, 3)
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path) not in ("", ".", "..")
