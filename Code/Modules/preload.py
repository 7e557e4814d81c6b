"""Imported last by the forkserver, after the heavy modules: freeze the heap.

`gc.freeze()` moves every object that exists now into a permanent
generation the collector never scans, so the login and user processes
forked from the server do not write to (and so copy) the pages they
inherit when their garbage collector runs. Imported nowhere else.
"""

import gc

gc.collect()
gc.freeze()
