"""Hearing the X bell on a virtual display, for the GUI tests.

`BellWatcher(display)` opens its own connection to the X server (libX11
through ctypes: no package beyond the libX11 Tk already needs), asks the
XKB extension for its BellNotify events, and counts every bell any client
rings on that display (`count`, `wait_for(n)`). A program's `bell()` is a
request to the X server, so this is the bell as the person would hear it,
not a flag inside the program.

How it fails: `BellWatcher` raises RuntimeError with one sentence when
libX11 or the XKB extension is missing or the display cannot be opened;
`wait_for` raises AssertionError after its timeout. `close()` stops the
watching thread and closes the connection; it is safe to call twice.
"""

import ctypes
import ctypes.util
import select
import threading
import time

XKB_USE_CORE_KBD = 0x0100
XKB_BELL_NOTIFY = 8
XKB_BELL_NOTIFY_MASK = 1 << 8


class _XkbAnyEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong),
                ("send_event", ctypes.c_int), ("display", ctypes.c_void_p),
                ("time", ctypes.c_ulong), ("xkb_type", ctypes.c_int),
                ("device", ctypes.c_uint)]


class _XEvent(ctypes.Union):
    _fields_ = [("any", _XkbAnyEvent), ("pad", ctypes.c_long * 24)]


def _libx11():
    name = ctypes.util.find_library("X11") or "libX11.so.6"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise RuntimeError("libX11 is not installed, so the bell cannot be heard.") from None
    lib.XOpenDisplay.restype = ctypes.c_void_p
    lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    for function in ("XPending", "XConnectionNumber", "XCloseDisplay", "XFlush"):
        getattr(lib, function).argtypes = [ctypes.c_void_p]
    lib.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.POINTER(_XEvent)]
    lib.XkbQueryExtension.argtypes = [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int)] * 5
    lib.XkbSelectEvents.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_ulong,
                                    ctypes.c_ulong]
    return lib


class BellWatcher:
    """Counts the bells rung on X display `display` (":99") from now on."""

    def __init__(self, display):
        self.lib = _libx11()
        self.dpy = self.lib.XOpenDisplay(display.encode())
        if not self.dpy:
            raise RuntimeError(f"Cannot open the X display {display}.")
        self.event_base = self._select_bells()
        self.count, self._stop = 0, threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="xbell")
        self._thread.start()

    def _select_bells(self):
        opcode, event, error = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        major, minor = ctypes.c_int(1), ctypes.c_int(0)
        if not self.lib.XkbQueryExtension(self.dpy, *(ctypes.byref(v) for v in (
                opcode, event, error, major, minor))):
            self.lib.XCloseDisplay(self.dpy)
            raise RuntimeError("The X server has no XKB extension, so no bell events.")
        self.lib.XkbSelectEvents(self.dpy, XKB_USE_CORE_KBD, XKB_BELL_NOTIFY_MASK,
                                 XKB_BELL_NOTIFY_MASK)
        self.lib.XFlush(self.dpy)
        return event.value

    def _watch(self):
        fd = self.lib.XConnectionNumber(self.dpy)
        event = _XEvent()
        while not self._stop.is_set():
            with self._lock:
                while not self._stop.is_set() and self.lib.XPending(self.dpy):
                    self.lib.XNextEvent(self.dpy, ctypes.byref(event))
                    if event.any.type == self.event_base \
                            and event.any.xkb_type == XKB_BELL_NOTIFY:
                        self.count += 1
            select.select([fd], [], [], 0.2)

    def wait_for(self, count, timeout):
        """Until `count` bells have been heard; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() >= deadline:
                raise AssertionError(f"heard {self.count} bells of {count}")
            time.sleep(0.05)

    def close(self):
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            self.lib.XCloseDisplay(self.dpy)
