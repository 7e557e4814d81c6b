"""The server's processes apart from the database: daemon, login, user, spares.

daemon (accepts TCP, supervises every child), spares (processes started
ahead of logins), login_process and login_dialogue (the Noise handshake,
Version exchange and login dialogue for one new connection), user_process
(one per logged-in connection: the relay between a client and the
monitor), options (the server's command line) and preload (what the
forkserver imports and warms up before it forks). They reach stored data
only through the monitor (`Modules.database.link`).
"""
