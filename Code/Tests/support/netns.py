"""A private network for one test, whose packets the test can make vanish.

`PrivateNetwork()` makes a network namespace of its own (held by an
`unshare --net sleep` process) with its loopback up. `prefix()` is the
command prefix (`nsenter --net=...`) that starts a program inside it, such
as the server; `socket()` makes a TCP socket that lives inside it, for a
client driven from the test process (a helper thread enters the namespace
just to create it: a socket keeps the namespace it was made in).
`lose_every_packet()` puts a blackhole qdisc on the loopback: from then on
every packet is dropped silently, in both directions, as on a cable that
was cut, and nobody gets an error or a reset; `restore()` removes it.

`unavailable()` says why this cannot work here (the kernel refuses a
network namespace, or has no blackhole qdisc), or None; a test skips with
that reason. `close()` ends the holder, and the namespace with it.
"""

import ctypes
import os
import socket as socket_module
import subprocess
import threading

from Tests.support.processes import wait_until

CLONE_NEWNET = 0x40000000


def unavailable():
    """Why a private network with packet loss cannot be had here, or None."""
    done = subprocess.run(["unshare", "--net", "sh", "-c",
                           "ip link set lo up && tc qdisc add dev lo root blackhole"],
                          capture_output=True, text=True)
    if done.returncode == 0:
        return None
    return ("this kernel refuses a private network namespace with a blackhole qdisc "
            f"(unshare --net; tc qdisc ... blackhole): {done.stderr.strip()[:200]}")


class PrivateNetwork:
    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "3600"],
                                       start_new_session=True)
        self.path = f"/proc/{self.holder.pid}/ns/net"
        try:
            wait_until(self._entered, message="the namespace holder to unshare")
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def _entered(self):
        try:
            return os.readlink(self.path) != os.readlink("/proc/self/ns/net")
        except OSError:
            return False

    def prefix(self):
        return ["nsenter", f"--net={self.path}", "--"]

    def run(self, *command):
        subprocess.run([*self.prefix(), *command], check=True, capture_output=True)

    def lose_every_packet(self):
        self.run("tc", "qdisc", "add", "dev", "lo", "root", "blackhole")

    def restore(self):
        self.run("tc", "qdisc", "del", "dev", "lo", "root")

    def socket(self):
        """A TCP socket inside the namespace (usable from any thread)."""
        made = []

        def make():
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    made.append(OSError(ctypes.get_errno(), "setns failed"))
                    return
            finally:
                os.close(fd)
            made.append(socket_module.socket(socket_module.AF_INET,
                                             socket_module.SOCK_STREAM))

        thread = threading.Thread(target=make)   # it ends in the namespace, alone
        thread.start()
        thread.join()
        if isinstance(made[0], OSError):
            raise made[0]
        return made[0]

    def close(self):
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()
