"""CPU time and resident memory of a proxy under test, for scripts/bench-compare.sh, from /proc.

    bench_compare_proc.py usage PID [--tree]     one JSON line: cpu_s (utime+stime, all threads), rss_kib, pids
    bench_compare_proc.py idle PID [--tree]      waits (at most --max seconds) until the processes use under 5% of a core
    bench_compare_proc.py cpu0                   CPU 0's busy seconds so far (all but idle and iowait, from /proc/stat) and
                                                 the monotonic clock: with the proxy's own CPU time, how busy others kept CPU 0

--tree adds every descendant (nginx and HAProxy workers, uvicorn children); without it only PID itself is
counted (the lyceum server, whose children are the simulator replicas shared by every contender)."""
import argparse
import json
import os
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name is in parentheses and may hold spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2:].split()
    return {"ppid": int(fields[1]), "utime": int(fields[11]), "stime": int(fields[12])}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def processes(root, tree):
    pids = [root]
    if tree:
        children = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    children.setdefault(stat(int(name))["ppid"], []).append(int(name))
                except (OSError, ValueError):
                    pass
        i = 0
        while i < len(pids):
            pids.extend(children.get(pids[i], []))
            i += 1
    return pids


def usage(root, tree):
    cpu, rss, alive = 0, 0, []
    for pid in processes(root, tree):
        try:
            s = stat(pid)
            cpu += s["utime"] + s["stime"]
            rss += rss_kib(pid)
            alive.append(pid)
        except (OSError, ValueError):
            pass
    return {"cpu_s": cpu / TICK, "rss_kib": rss, "pids": alive}


def cpu0():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal ...
                busy = sum(v[:8]) - v[3] - v[4]
                return {"busy_s": busy / TICK, "at": time.monotonic()}
    return {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["usage", "idle", "cpu0"])
    parser.add_argument("pid", type=int, nargs="?")
    parser.add_argument("--tree", action="store_true")
    parser.add_argument("--max", type=float, default=30)
    args = parser.parse_args()
    if args.command == "cpu0":
        print(json.dumps(cpu0()))
        return
    if args.command == "usage":
        print(json.dumps(usage(args.pid, args.tree)))
        return
    deadline = time.monotonic() + args.max
    before = usage(args.pid, args.tree)["cpu_s"]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = usage(args.pid, args.tree)["cpu_s"]
        if now - before < 0.025:
            break
        before = now


if __name__ == "__main__":
    main()
