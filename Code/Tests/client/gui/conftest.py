"""Fixtures of the GUI tests: one virtual X display per test process, and the
real windowed client, both always stopped, even when a test fails.

Without Tk, or without both Xvfb and a display (or without xdotool), each
test that needs them is skipped with the same one-sentence reason saying
what to install (`Tests.support.gui.missing`; `python Code/tests.py`
lists the reasons of skipped tests at the end).
"""

import pytest

from Tests.support.gui import GuiProcess, display_or_skip


@pytest.fixture(scope="session")
def display():
    """The X display the windows open on (skips with a reason without one)."""
    own = display_or_skip()
    if own is None:
        import os
        yield os.environ["DISPLAY"]
        return
    try:
        yield own.name
    finally:
        own.stop()


@pytest.fixture
def make_gui(display, tmp_path):
    """Factory: make_gui(server, *extra, known_hosts=..., env=...) -> a started GuiProcess."""
    started = []

    def make(server, *extra, known_hosts=None, env=None):
        gui = GuiProcess(display, tmp_path, server.port, *extra, known_hosts=known_hosts,
                         env=env)
        started.append(gui)
        return gui.start()

    yield make
    for gui in started:
        gui.close()


@pytest.fixture
def tk_root(display):
    """A Tk root of the test process on the display, for tests of one widget class."""
    import tkinter
    root = tkinter.Tk(screenName=display)
    try:
        yield root
    finally:
        root.destroy()
