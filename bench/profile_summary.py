"""Summarise a `py-spy record --format raw --subprocesses --threads` profile.

    python bench/profile_summary.py PROFILE.txt [--top 25] [--role user]

py-spy samples only threads that are running (no --idle), so a sample
count is CPU time. For every server role (daemon, database main thread,
database writer thread, user, login, ...) this prints its share of all
samples, the functions where the time is spent (self time, by leaf frame)
and the heaviest call sites (inclusive time, by frame), so that each
benchmark figure can be traced to the code that limits it.
"""

import argparse
import collections
import re
import sys

_PROC = re.compile(r'^process \d+:"(.*)"$')
_THREAD = re.compile(r"^thread \(\d+\): ?(.*)$")


def role(proc_title, thread_name):
    if "parley: database" in proc_title:
        if thread_name.startswith("parley-writer"):
            return "database/writer"
        if thread_name.startswith("parley-hash"):
            return "database/hash"
        return "database/" + (thread_name or "main")
    for name in ("user", "login", "daemon"):
        if f"parley: {name}" in proc_title:
            return name
    if "forkserver" in proc_title:
        return "forkserver"
    return proc_title[:40]


def short(frame):
    """'fn (path/to/file.py:123)' -> 'fn (file.py:123)'."""
    match = re.match(r"^(.*) \((.*?)(?::(\d+))?\)$", frame)
    if not match:
        return frame
    fn, path, line = match.groups()
    path = path.rsplit("/", 2)
    path = "/".join(path[-2:]) if len(path) > 1 else path[0]
    return f"{fn} ({path}{':' + line if line else ''})"


def strip_line(frame):
    return re.sub(r":\d+\)$", ")", frame)


def _is_wait(frame):
    return frame.startswith(("EpollSelector.select", "select (", "_take_batch",
                             "SingleWriter._take_batch", "Condition.wait", "Queue.get"))


def load(path):
    by_role = collections.defaultdict(list)   # role -> [(frames, count)]
    with open(path, errors="replace") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw:
                continue
            stack, _, count = raw.rpartition(" ")
            try:
                count = int(count)
            except ValueError:
                continue
            frames = stack.split(";")
            proc_title, thread_name, rest = "", "", []
            for frame in frames:
                m = _PROC.match(frame)
                if m:
                    proc_title = m.group(1)
                    continue
                m = _THREAD.match(frame)
                if m:
                    thread_name = m.group(1)
                    continue
                rest.append(frame)
            by_role[role(proc_title, thread_name)].append((rest, count))
    return by_role


def summarise(by_role, top, only=None):
    total = sum(c for samples in by_role.values() for _, c in samples)
    print(f"{total} samples in all (CPU-time samples of the whole server tree)")
    for name, samples in sorted(by_role.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        if only and not name.startswith(only):
            continue
        n = sum(c for _, c in samples)
        print(f"\n== {name}: {n} samples, {100.0 * n / max(1, total):.1f}% of the server's CPU")
        self_time = collections.Counter()
        inclusive = collections.Counter()
        for frames, count in samples:
            if frames:
                self_time[short(strip_line(frames[-1]))] += count
            for frame in set(short(strip_line(f)) for f in frames):
                inclusive[frame] += count
        waiting = sum(c for frame, c in self_time.items() if _is_wait(frame))
        print(f"  {100.0 * waiting / n:.1f}% of its samples sit in select/epoll/queue waits: a "
              "thread py-spy saw runnable there was woken and waiting for a CPU, not working")
        print("  self time (leaf function):")
        for frame, count in self_time.most_common(top):
            print(f"    {100.0 * count / n:5.1f}%  {frame}")
        print("  inclusive (function and everything it calls):")
        shown = [(f, c) for f, c in inclusive.most_common()
                 if 100.0 * c / n < 99.5 and "multiprocessing/" not in f
                 and not f.startswith(("process ", "<module>", " main("))]
        for frame, count in shown[:top]:   # the bootstrap frames every sample has are left out
            print(f"    {100.0 * count / n:5.1f}%  {frame}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--role", default=None, help="only roles starting with this")
    args = parser.parse_args(argv)
    summarise(load(args.profile), args.top, args.role)
    return 0


if __name__ == "__main__":
    sys.exit(main())
