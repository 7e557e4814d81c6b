"""The terminal client: network session, login, commands and what it prints.

session (one connection: handshake, login dialogue, requests, pushes),
login (server-key pin and login answers), commands (parsing and running one
command line), cli (options, batch and --json mode), and for a person at a
terminal: interactive, link (reconnection), actions, terminal, screen,
output and store. It imports the wire stack, `Modules.identity`,
`Modules.rules` and `Modules.operations`, never the server or database.
"""
