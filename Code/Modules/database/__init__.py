"""The database process: the monitor and everything only it may touch.

monitor (the process: per-role dispatch tables over a Unix socket), link
(the other end of that socket, used by login and user processes: the only
module of this package that other processes import), writer (the single
writer thread with group commit), storage and schema (SQL over the three
SQLite files) and auth (argon2 hashing, login throttling, tickets).
Password hashes and the SQLite files never leave this package's process.
"""
