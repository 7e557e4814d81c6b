"""The windowed client (`python Code/client.py --gui`, issue 17): tkinter windows
over the same session, link and command modules as the terminal client.

bridge: the network side (a `Link`, a worker thread, records into a queue);
app: the Tk root, the event pump and the run; login_window, main_window,
panes (with the compose pane) and dialogs: the windows; dump: the read-only debugging dump
of the visible texts (PARLEY_GUI_DUMP) the tests read.
"""
