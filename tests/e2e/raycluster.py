"""A real Ray cluster on one machine for end-to-end tests: a head and worker nodes, each in its own network,
PID and mount namespace, on a private bridge that exists only inside namespaces this module made.

Layout (PREFIX is short, e.g. "lr3f9a"; namespace names are PREFIX-ROLE):

    PREFIX-br     bridge namespace: bridge br0 (up) and the bridge side of every veth (PREFIXROLE)
    PREFIX-cp     control plane, SUBNET.1: no Ray, no PID namespace; a test runs `lyceum server` here
    PREFIX-head   Ray head, SUBNET.2: GCS on 6379, dashboard / Jobs REST API on 8265 (0.0.0.0 in its namespace)
    PREFIX-w1     Ray worker, SUBNET.3, {"sim_gpu": 2}
    PREFIX-w2     Ray worker, SUBNET.4, {"sim_gpu": 2}
    PREFIX-wN     further workers from add_worker(), SUBNET.5 and up

Each node namespace has `lo` up, eth0 with its address, and no default route: nothing in it reaches the
machine's own network, and nothing outside reaches it except through a Forwarder.

A Ray node runs as `ip netns exec NS unshare -m -p -f --mount-proc sh -c 'mount tmpfs TEMPDIR; mount tmpfs
/dev/shm; ray start ... --block'`: that sh is PID 1 of the node's PID namespace (it reaps orphans), so SIGKILL
to it (kill_node) takes the whole node down at once. Every node uses the same --temp-dir path,
each on a tmpfs of its own. `ray stop` is never used (it kills by process name, machine-wide).

Cleanup (context exit, atexit, and a sweep of dead owners' leftovers when a cluster starts) kills by PID only:
each node's PID-namespace init, then whatever `ip netns pids` still lists in our namespaces; then it deletes
the namespaces (the veths go with them). Ownership: /run/lyceum-raycluster/PREFIX.json holds the owner's PID
and start time, written before any namespace exists. If the owner is SIGKILLed, every Ray node dies with it
(`setpriv --pdeathsig KILL` on `unshare`, `unshare --kill-child`); the empty namespaces, and whatever
exec_in started, stay until the next RayCluster() sweeps them. The parent-death signal follows the *thread*
that started a node: call start() / add_worker() from a thread that outlives the cluster (the main thread).

Do not pass RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: with it, workers refuse to join ("Multi-node Ray clusters
are not supported"). Without it Ray binds many ports to 0.0.0.0 / *, which is harmless here: each node's
namespace has only lo and its eth0 on the private bridge.

Usage:

    with RayCluster() as cluster:            # prefix and subnet picked automatically
        cluster.start()                      # head, w1, w2; returns when every node is ALIVE
        cluster.head_url                     # "http://10.231.N.2:8265", as seen from the cp namespace
        cluster.api("POST", "/api/jobs/", json={...})   # through a Forwarder from the cp namespace
        with Forwarder(cluster.ns("cp"), "127.0.0.1", 8080) as fwd:
            requests.get(f"http://127.0.0.1:{fwd.port}/...")   # reaches a server inside cp
"""
import atexit
import ctypes
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
STATE_DIR = "/run/lyceum-raycluster"   # one JSON file per live cluster: owner PID, its start time, namespaces
DEFAULT_PREFIX_RE = re.compile(r"^lr[0-9a-f]{4}$")
GCS_PORT = 6379
DASHBOARD_PORT = 8265

_libc = ctypes.CDLL(None, use_errno=True)


def _log(msg):
    if os.environ.get("RAYCLUSTER_DEBUG"):
        print(f"[raycluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run(argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def ray_binary():
    """The `ray` CLI of the virtual environment running this process, or of the repository's .venv."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "ray"),
                  os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".venv", "bin", "ray")]
    for path in candidates:
        if os.access(path, os.X_OK):
            return os.path.abspath(path)
    raise FileNotFoundError("no `ray` next to sys.executable nor in .venv/bin (pip install 'ray[default]')")


def missing_requirements():
    """Why this machine cannot run a RayCluster, or None: root, `ip`, `unshare`, `setpriv`, ray."""
    if os.geteuid() != 0:
        return "needs root (network, PID and mount namespaces)"
    for tool in ("ip", "unshare", "setpriv", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    try:
        ray_binary()
    except FileNotFoundError as e:
        return str(e)
    return None


# --- processes -----------------------------------------------------------------------------------------

def _proc_start_time(pid):
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return None
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _kill(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def netns_list():
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if not n.startswith("."))
    except FileNotFoundError:
        return []


def netns_pids(ns):
    """Host PIDs of live (non-zombie) processes in network namespace `ns` (as `ip netns pids` lists them)."""
    out = _run(["ip", "netns", "pids", ns], check=False)
    if out.returncode != 0:
        return []
    return [int(p) for p in out.stdout.split() if _proc_start_time(int(p)) is not None]


def _destroy_netns(ns, timeout=10.0):
    """SIGKILLs every process in `ns` (repeatedly, until none is left) and deletes the namespace."""
    deadline = time.monotonic() + timeout
    while True:
        pids = netns_pids(ns)
        if not pids:
            break
        for pid in pids:
            _kill(pid)
        if time.monotonic() > deadline:
            _log(f"processes still in {ns} after {timeout}s: {pids}")
            break
        time.sleep(0.05)
    _run(["ip", "netns", "del", ns], check=False)


# --- network namespaces from threads (Python 3.11 has no os.setns) --------------------------------------

def _setns_net(ns):
    """Moves the calling thread (only it: the network namespace is per thread) into network namespace `ns`."""
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(ns, fn, *args):
    """Runs fn(*args) in a fresh thread that has entered network namespace `ns`; returns its result.
    Sockets it creates stay in that namespace whichever thread uses them afterwards."""
    result = {}

    def target():
        try:
            _setns_net(ns)
            result["value"] = fn(*args)
        except BaseException as e:  # handed to the caller
            result["error"] = e

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def connect_in_netns(ns, host, port, timeout=5.0):
    """A TCP socket connected to host:port from inside network namespace `ns`."""
    def connect():
        s = socket.create_connection((host, port), timeout=timeout)
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    return run_in_netns(ns, connect)


def port_open_in_netns(ns, host, port, timeout=1.0):
    try:
        connect_in_netns(ns, host, port, timeout).close()
        return True
    except OSError:
        return False


class Forwarder:
    """Listens on 127.0.0.1 (an ephemeral port, `.port`) in this process's network namespace and relays each
    connection to host:port, connecting from inside network namespace `ns`. Bytes pass through as they
    arrive (no buffering beyond one recv), so streamed responses (SSE) stream.

        with Forwarder("lr3f9a-cp", "127.0.0.1", 8080) as fwd:
            requests.get(fwd.url + "/healthz")
    """

    def __init__(self, ns, host, port):
        self.ns, self.host, self.target_port = ns, host, port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        self._lock = threading.Lock()
        self._sockets = set()
        self._thread = threading.Thread(target=self._accept_loop, name=f"forwarder-{ns}-{port}", daemon=True)
        self._thread.start()

    def _track(self, s):
        with self._lock:
            if self._closed:
                s.close()
                return False
            self._sockets.add(s)
            return True

    def _untrack_close(self, s):
        with self._lock:
            self._sockets.discard(s)
        try:
            s.close()
        except OSError:
            pass

    def _accept_loop(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self._track(client):
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client):
        # This thread enters the namespace to connect; the relay threads need not (the socket stays there).
        try:
            _setns_net(self.ns)
            upstream = socket.create_connection((self.host, self.target_port), timeout=10)
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            _log(f"forwarder {self.ns} -> {self.host}:{self.target_port}: {e}")
            self._untrack_close(client)
            return
        if not self._track(upstream):
            self._untrack_close(client)
            return
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream)
        back.join()
        self._untrack_close(client)
        self._untrack_close(upstream)

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        # Half-close: the other direction may still be sending (a request body done, the response streaming).
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
            self._sockets.clear()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() (close alone would not)
        except OSError:
            pass
        self._listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- ownership of namespaces, and the sweep of leftovers --------------------------------------------------

def _owner_alive(state):
    pid, start = state.get("pid"), state.get("start_time")
    return pid is not None and _proc_start_time(pid) == start


def _read_state(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _destroy_prefix(prefix, namespaces, temp_dir=None):
    ours = [n for n in namespaces if n.startswith(prefix + "-")]
    # Node inits first (the bridge last), so that a whole PID namespace goes at once.
    for ns in sorted(ours, key=lambda n: n.endswith("-br")):
        _destroy_netns(ns)
    if temp_dir and os.path.isdir(temp_dir) and not os.listdir(temp_dir):
        try:
            os.rmdir(temp_dir)
        except OSError:
            pass


def sweep_leftovers():
    """Removes what clusters of dead owners left: their namespaces (and every process in them), their state
    files and temp-dir mount points; also namespaces named like ours (lrXXXX-*) that no state file claims."""
    os.makedirs(STATE_DIR, exist_ok=True)
    existing = netns_list()
    claimed = set()
    for entry in os.listdir(STATE_DIR):
        if not entry.endswith(".json"):
            continue
        path = os.path.join(STATE_DIR, entry)
        state = _read_state(path)
        prefix = entry[:-5]
        if state is not None and _owner_alive(state):
            claimed.add(prefix)
            continue
        _log(f"sweeping leftovers of {prefix} (owner {state and state.get('pid')} is gone)")
        _destroy_prefix(prefix, existing, state and state.get("temp_dir"))
        try:
            os.remove(path)
        except OSError:
            pass
    for ns in netns_list():
        prefix = ns.split("-", 1)[0]
        if "-" in ns and DEFAULT_PREFIX_RE.match(prefix) and prefix not in claimed \
                and not os.path.exists(os.path.join(STATE_DIR, prefix + ".json")):
            _log(f"sweeping unclaimed namespace {ns}")
            _destroy_netns(ns)


# --- the cluster ----------------------------------------------------------------------------------------

class Node:
    def __init__(self, name, ns, ip, role, resources=None, num_cpus=0):
        self.name, self.ns, self.ip, self.role = name, ns, ip, role
        self.resources = dict(resources or {})
        self.num_cpus = num_cpus
        self.proc = None        # `unshare` (the process `ip netns exec` became), parent of the init
        self.init_pid = None    # host PID of the node's PID-namespace init: the sh around `ray start --block`
        self.log_path = None
        self.started_at = None
        self.killed = False

    def __repr__(self):
        return f"Node({self.name}, {self.ip}, init={self.init_pid})"


class RayCluster:
    """A Ray head and workers, one network+PID+mount namespace each, on a private bridge; see the module doc.

    RayCluster(prefix=None, subnet=None, workers=None, head_cpus=0, worker_cpus=2, ...)
      prefix   namespace / interface name prefix, at most 8 chars; default "lr" + 4 random hex digits
      subnet   an IPv4 /24 (string); default an unused 10.231.N.0/24
      workers  {name: resources} started by start(); default {"w1": {"sim_gpu": 2}, "w2": {"sim_gpu": 2}}
    """

    DEFAULT_WORKERS = {"w1": {"sim_gpu": 2}, "w2": {"sim_gpu": 2}}

    def __init__(self, prefix=None, subnet=None, workers=None, head_cpus=0, worker_cpus=2,
                 object_store_bytes=100 * 1024 * 1024, temp_dir=None, log_dir=None, env=None, head_env=None):
        if os.geteuid() != 0:
            raise PermissionError("RayCluster needs root")
        self.ray = ray_binary()
        sweep_leftovers()
        self.prefix = prefix or self._pick_prefix()
        if not re.fullmatch(r"[a-z][a-z0-9]{1,7}", self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: 2-8 lowercase letters/digits, starting with a letter")
        taken = [n for n in netns_list() if n.startswith(self.prefix + "-")]
        if taken or os.path.exists(self._state_path()):
            raise ValueError(f"prefix {self.prefix!r} is in use: {taken}")
        self.subnet = ipaddress.ip_network(subnet) if subnet else self._pick_subnet()
        if self.subnet.prefixlen != 24:
            raise ValueError("subnet must be a /24")
        self.worker_specs = dict(self.DEFAULT_WORKERS if workers is None else workers)
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.object_store_bytes = object_store_bytes
        # The same path on every node (each a tmpfs of its own), short because Ray puts unix sockets under it.
        self.temp_dir = temp_dir or f"/tmp/ray-{self.prefix}"
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or tempfile.mkdtemp(prefix=f"raycluster-{self.prefix}-")
        self.env = dict(env or {})
        self.head_env = dict(head_env or {})
        self.nodes = {}          # name -> Node, in start order (cp included)
        self._next_host = 5      # .1 cp, .2 head, .3 w1, .4 w2; add_worker takes .5 and up
        self._forwarders = []
        self._execs = []
        self._api_forwarder = None
        self._session = requests.Session()
        self._closed = False
        self._write_state()
        atexit.register(self.close)
        try:
            self._make_bridge()
            self._make_netns("cp", self._ip(1))
        except BaseException:
            self.close()
            raise

    # names and addresses

    def ns(self, name):
        """The network namespace name of node `name` ("cp", "head", "w1", ...)."""
        return f"{self.prefix}-{name}"

    def _ip(self, host):
        return str(self.subnet.network_address + host)

    def ip(self, name):
        return self.nodes[name].ip

    @property
    def head_ip(self):
        return self._ip(2)

    @property
    def cp_ip(self):
        return self._ip(1)

    @property
    def head_url(self):
        """The head's dashboard / Jobs REST API as a process in the cp namespace reaches it."""
        return f"http://{self.head_ip}:{DASHBOARD_PORT}"

    @property
    def gcs_address(self):
        return f"{self.head_ip}:{GCS_PORT}"

    @property
    def api_url(self):
        """The head's dashboard as this (root-namespace) process reaches it: a Forwarder from the cp namespace."""
        if self._api_forwarder is None:
            self._api_forwarder = self.forward("cp", self.head_ip, DASHBOARD_PORT)
        return self._api_forwarder.url

    @staticmethod
    def _pick_prefix():
        existing = {n.split("-", 1)[0] for n in netns_list()}
        existing |= {e[:-5] for e in os.listdir(STATE_DIR) if e.endswith(".json")}
        while True:
            prefix = "lr%04x" % random.randrange(0x10000)
            if prefix not in existing:
                return prefix

    def _pick_subnet(self):
        """A 10.231.N.0/24 that no address on this machine, nor in any named namespace, is in."""
        used = set()
        sources = [["ip", "-o", "-4", "addr"]] + [["ip", "-n", ns, "-o", "-4", "addr"] for ns in netns_list()]
        for argv in sources:
            out = _run(argv, check=False).stdout
            for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", out):
                used.add(m.group(1))
        candidates = list(range(1, 255))
        random.shuffle(candidates)
        for n in candidates:
            net = ipaddress.ip_network(f"10.231.{n}.0/24")
            if not any(ipaddress.ip_address(a) in net for a in used):
                return net
        raise RuntimeError("no free 10.231.N.0/24")

    # state file (for the sweep)

    def _state_path(self):
        return os.path.join(STATE_DIR, self.prefix + ".json")

    def _write_state(self):
        os.makedirs(STATE_DIR, exist_ok=True)
        state = {"pid": os.getpid(), "start_time": _proc_start_time(os.getpid()), "prefix": self.prefix,
                 "subnet": str(self.subnet), "temp_dir": self.temp_dir, "log_dir": self.log_dir}
        tmp = self._state_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self._state_path())

    # namespaces

    def _make_bridge(self):
        br = self.ns("br")
        _run(["ip", "netns", "add", br])
        _run(["ip", "-n", br, "link", "set", "lo", "up"])
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", br, "link", "set", "br0", "up"])

    def _make_netns(self, name, ip):
        if len(self.prefix + name) > 15:
            raise ValueError(f"node name {name!r} too long for interface {self.prefix + name!r} (15 chars max)")
        if not re.fullmatch(r"[a-z0-9]+", name):
            raise ValueError(f"node name {name!r}: lowercase letters and digits only")
        ns, br, veth = self.ns(name), self.ns("br"), self.prefix + name
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", br, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "-n", br, "link", "set", veth, "master", "br0"])
        _run(["ip", "-n", br, "link", "set", veth, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self.nodes[name] = Node(name, ns, ip, "cp" if name == "cp" else "ray")
        return self.nodes[name]

    # Ray nodes

    def restart_head(self, timeout=60):
        """Starts the head again, in its namespace, after kill_node("head") (with GCS fault tolerance, given
        as head_env RAY_REDIS_ADDRESS, the cluster picks up where it was). Returns when the Jobs API answers."""
        node = self.nodes["head"]
        assert node.killed, "kill_node('head') first"
        self._start_node("head", node.ip, True, {}, self.head_cpus, reuse=True)
        def jobs_api():
            try:
                return self.api("GET", "/api/jobs/", timeout=5).status_code == 200
            except requests.RequestException:
                return False
        self._wait(jobs_api, timeout, "the restarted head's Jobs API", node="head")

    def _start_node(self, name, ip, head, resources, num_cpus, reuse=False):
        if reuse:
            node = self.nodes[name]
            node.killed, node.init_pid = False, None
        else:
            node = self._make_netns(name, ip)
        node.role, node.resources, node.num_cpus = ("head" if head else "worker"), dict(resources), num_cpus
        argv = [self.ray, "start", "--block", "--node-ip-address", ip, "--temp-dir", self.temp_dir,
                "--disable-usage-stats", "--num-cpus", str(num_cpus), "--num-gpus", "0",
                "--object-store-memory", str(self.object_store_bytes)]
        if resources:
            argv += ["--resources", json.dumps(resources)]
        if head:
            argv += ["--head", "--port", str(GCS_PORT), "--include-dashboard", "true",
                     "--dashboard-host", "0.0.0.0", "--dashboard-port", str(DASHBOARD_PORT)]
        else:
            argv += ["--address", self.gcs_address]
        # Private tmpfs for the temp dir and for /dev/shm (the object store), in the node's mount namespace.
        # No `exec`: sh stays PID 1 and, while it waits for `ray start --block`, reaps the orphans the node
        # reparents to it (the ray CLI as PID 1 would leave them zombies, and a stopped job's process, a zombie,
        # would hold `POST /api/jobs/{id}/stop` for the full RAY_JOB_STOP_WAIT_TIME_S).
        script = ('mount -t tmpfs -o mode=1777 tmpfs "$0" && mount -t tmpfs -o mode=1777 tmpfs /dev/shm '
                  '&& "$@"; exit $?')
        os.makedirs(self.temp_dir, exist_ok=True)   # the mount point, on the host; stays empty there
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **self.env, **(self.head_env if head else {}))
        node.log_path = os.path.join(self.log_dir, f"{name}.log")
        log = open(node.log_path, "ab")
        # setpriv --pdeathsig: if this process dies, `unshare` gets SIGKILL; --kill-child passes it to the init.
        node.proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "ip", "netns", "exec", node.ns,
             "unshare", "--kill-child=SIGKILL", "-m", "-p", "-f", "--mount-proc",
             "sh", "-c", script, self.temp_dir, *argv],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        node.started_at = time.monotonic()
        # `ip netns exec` and `setpriv` exec in place, so proc.pid is `unshare`; its one child is the init.
        deadline = time.monotonic() + 10
        while not node.init_pid:
            kids = _children(node.proc.pid)
            if kids:
                node.init_pid = kids[0]
                break
            if node.proc.poll() is not None:
                raise RuntimeError(f"node {name} exited at once ({node.proc.returncode}): {self.log_text(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name}: no PID-namespace init appeared")
            time.sleep(0.01)
        _log(f"started {name} ({ip}) init={node.init_pid}")
        return node

    def start(self, timeout=120):
        """Starts the head, waits for its GCS, starts the workers, and waits until every node is ALIVE."""
        t0 = time.monotonic()
        self._start_node("head", self.head_ip, True, {}, self.head_cpus)
        self._wait(lambda: port_open_in_netns(self.ns("cp"), self.head_ip, GCS_PORT),
                   timeout, "the head's GCS", node="head")
        _log(f"GCS up after {time.monotonic() - t0:.1f}s")
        for i, (name, resources) in enumerate(self.worker_specs.items()):
            self._start_node(name, self._ip(3 + i) if i < 2 else self._ip(self._take_host()), False,
                             resources, self.worker_cpus)
        self.wait_ready(timeout=max(1, timeout - (time.monotonic() - t0)))
        _log(f"cluster ready after {time.monotonic() - t0:.1f}s")
        return self

    def _take_host(self):
        host, self._next_host = self._next_host, self._next_host + 1
        if host > 254:
            raise RuntimeError("subnet full")
        return host

    def add_worker(self, name, resources=None, num_cpus=None, wait=True, timeout=60):
        """Starts one more worker (the next free address) that joins the running cluster; by default waits
        until Ray lists it ALIVE. Returns its Node."""
        if name in self.nodes:
            raise ValueError(f"node {name} exists")
        node = self._start_node(name, self._ip(self._take_host()), False,
                                {"sim_gpu": 2} if resources is None else resources,
                                self.worker_cpus if num_cpus is None else num_cpus)
        if wait:
            self._wait(lambda: self._alive_with_resources([name]), timeout, f"{name} ALIVE", node=name)
        return node

    def _wait(self, predicate, timeout, what, node=None):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            for n in self.nodes.values():
                if n.proc is not None and n.proc.poll() is not None and not n.killed:
                    raise RuntimeError(f"node {n.name} exited ({n.proc.returncode}) while waiting for {what}:\n"
                                       f"{self.log_text(n.name)}")
            if time.monotonic() > deadline:
                tail = f"\n--- {node} log ---\n{self.log_text(node)}" if node else ""
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
            time.sleep(0.2)

    def log_text(self, name, limit=8000):
        try:
            with open(self.nodes[name].log_path, "rb") as f:
                return f.read().decode(errors="replace")[-limit:]
        except (OSError, KeyError, TypeError):
            return ""

    # the head's REST APIs

    def api(self, method, path, timeout=10, **kwargs):
        """An HTTP request to the head's dashboard (Jobs API, state API), from the cp namespace."""
        return self._session.request(method, self.api_url + path, timeout=timeout, **kwargs)

    def nodes_state(self):
        """Ray's node list (GET /api/v0/nodes): dicts with node_id, node_ip, state, resources_total, ..."""
        r = self.api("GET", "/api/v0/nodes", params={"limit": 1000, "detail": "true"})
        r.raise_for_status()
        return r.json()["data"]["result"]["result"]

    def _node_entry(self, name, entries):
        ip = self.nodes[name].ip
        mine = [e for e in entries if e.get("node_ip") == ip]
        alive = [e for e in mine if e.get("state") == "ALIVE"]
        return (alive or sorted(mine, key=lambda e: e.get("start_time_ms") or 0))[-1] if mine else None

    def node_state(self, name):
        """Ray's state of our node `name` ("ALIVE", "DEAD"), or None if Ray does not list it."""
        entry = self._node_entry(name, self.nodes_state())
        return entry and entry.get("state")

    def node_ids(self):
        """Our node name -> Ray node id (hex), for every Ray node that Ray lists (ALIVE preferred)."""
        entries = self.nodes_state()
        out = {}
        for name, node in self.nodes.items():
            if node.role in ("head", "worker"):
                entry = self._node_entry(name, entries)
                if entry:
                    out[name] = entry["node_id"]
        return out

    def node_name(self, node_id):
        """Our node name for a Ray node id, or None."""
        return {v: k for k, v in self.node_ids().items()}.get(node_id)

    def _alive_with_resources(self, names):
        try:
            entries = self.nodes_state()
        except (requests.RequestException, ValueError, KeyError):
            return False
        for name in names:
            node = self.nodes[name]
            entry = self._node_entry(name, entries)
            if not entry or entry.get("state") != "ALIVE":
                return False
            total = entry.get("resources_total") or {}
            for key, value in node.resources.items():
                if float(total.get(key, 0)) != float(value):
                    return False
            if float(total.get("CPU", 0)) != float(node.num_cpus):
                return False
        return True

    def wait_ready(self, timeout=60):
        """Waits until the Jobs API answers from the cp namespace and every started Ray node (that was not
        killed) is ALIVE with its resources."""
        def jobs_api():
            try:
                return self.api("GET", "/api/jobs/", timeout=5).status_code == 200
            except requests.RequestException:
                return False
        self._wait(jobs_api, timeout, "the Jobs API", node="head")
        names = [n.name for n in self.nodes.values()
                 if n.role in ("head", "worker") and not n.killed]
        self._wait(lambda: self._alive_with_resources(names), timeout, f"nodes {names} ALIVE", node="head")

    def jobs(self):
        """GET /api/jobs/: every job the head knows, as a list of dicts."""
        r = self.api("GET", "/api/jobs/")
        r.raise_for_status()
        return r.json()

    def submit_job(self, entrypoint, **fields):
        """POST /api/jobs/ with these fields (submission_id, entrypoint_resources, runtime_env, ...);
        returns the submission id."""
        r = self.api("POST", "/api/jobs/", json=dict(fields, entrypoint=entrypoint))
        if r.status_code != 200:
            raise RuntimeError(f"job submission failed: HTTP {r.status_code}: {r.text}")
        return r.json()["submission_id"]

    def job(self, submission_id):
        r = self.api("GET", f"/api/jobs/{submission_id}")
        r.raise_for_status()
        return r.json()

    def stop_job(self, submission_id):
        r = self.api("POST", f"/api/jobs/{submission_id}/stop")
        r.raise_for_status()
        return r.json().get("stopped")

    def job_logs(self, submission_id):
        r = self.api("GET", f"/api/jobs/{submission_id}/logs")
        r.raise_for_status()
        return r.json().get("logs", "")

    # processes in namespaces

    def exec_in(self, name, argv, node_namespaces=False, **popen_kwargs):
        """Starts argv inside node `name`'s network namespace (`ip netns exec`) and returns the Popen.
        With node_namespaces=True (Ray nodes only) it also joins the node's PID and mount namespaces
        (nsenter), so it sees the node's processes and its tmpfs temp dir. Whatever it starts is killed at
        cleanup like everything else in the namespace."""
        if node_namespaces:
            node = self.nodes[name]
            full = ["nsenter", "-t", str(node.init_pid), "-n", "-m", "-p", *argv]
        else:
            full = ["ip", "netns", "exec", self.ns(name), *argv]
        proc = subprocess.Popen(full, **popen_kwargs)
        self._execs.append(proc)
        return proc

    def run_in(self, name, argv, timeout=30, **kwargs):
        """subprocess.run of argv inside node `name`'s network namespace; returns the CompletedProcess."""
        return subprocess.run(["ip", "netns", "exec", self.ns(name), *argv], timeout=timeout, **kwargs)

    def forward(self, name, host, port):
        """A Forwarder (closed with the cluster) from 127.0.0.1 here to host:port as node `name` sees it."""
        fwd = Forwarder(self.ns(name), host, port)
        self._forwarders.append(fwd)
        return fwd

    def pids_in(self, name):
        """Host PIDs of live processes in node `name`'s network namespace (`ip netns pids`)."""
        return netns_pids(self.ns(name))

    def kill_node(self, name, timeout=10):
        """SIGKILLs node `name`'s PID-namespace init, so the whole node dies at once; waits until `ip netns
        pids` lists nothing there (returns the seconds that took). The namespace itself stays, empty."""
        node = self.nodes[name]
        t0 = time.monotonic()
        node.killed = True
        _kill(node.init_pid)
        try:
            node.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(node.proc.pid)
        deadline = t0 + timeout
        while self.pids_in(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes left in {node.ns}: {self.pids_in(name)}")
            time.sleep(0.02)
        return time.monotonic() - t0

    # cleanup

    def close(self, keep_logs=None):
        """Kills every node and every process in our namespaces, by PID; deletes the namespaces. Removes the
        node logs too (if this cluster made their folder), unless keep_logs or RAYCLUSTER_KEEP_LOGS=1; a
        `with` block that raises keeps them, and says where."""
        if self._closed:
            return
        self._closed = True
        for fwd in self._forwarders:
            fwd.close()
        self._session.close()
        for node in self.nodes.values():
            if node.init_pid:
                _kill(node.init_pid)
        for node in self.nodes.values():
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    _kill(node.proc.pid)
                    node.proc.wait(timeout=5)
        _destroy_prefix(self.prefix, netns_list(), self.temp_dir)
        for proc in self._execs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.remove(self._state_path())
        except OSError:
            pass
        if keep_logs is None:
            keep_logs = os.environ.get("RAYCLUSTER_KEEP_LOGS") == "1"
        if keep_logs or not self._own_log_dir:
            print(f"raycluster {self.prefix}: node logs in {self.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(keep_logs=True if exc_type is not None else None)
