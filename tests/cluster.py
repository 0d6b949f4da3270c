"""A real Redis Cluster for the tests: ``redis-server`` in cluster mode on free ports, joined
by ``redis-cli --cluster create``, ready once every node says ``cluster_state:ok``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis as sync_redis

from tests.support import free_port

NODE_TIMEOUT_MS = 1000
"""cluster-node-timeout: how long a master may be silent before its replica takes over."""


def command(port: int, *args: str, timeout: float = 5.0, password: str | None = None) -> str:
    """One command through redis-cli: its output, or "" if the node does not answer."""
    auth = ["-a", password, "--no-auth-warning"] if password else []
    try:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *auth, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


class RedisCluster:
    """``masters`` masters, each with ``replicas`` replicas, in one temporary folder."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        password: str | None = None,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        self.password = password
        self.node_timeout_ms = node_timeout_ms
        self.masters = masters
        self.replicas = replicas
        self.ports: list[int] = []
        while len(self.ports) < masters * (1 + replicas):  # free_port may say one port twice
            port = free_port()
            if port not in self.ports and port + 10000 < 65536:  # +10000: the cluster bus
                self.ports.append(port)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="wshub-cluster-"))

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def cmd(self, port: int, *args: str) -> str:
        return command(port, *args, password=self.password)

    def _spawn(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",  # replicas in sync at once, not after 5 s
                "0",
                # Redis lists a replica in CLUSTER SLOTS (where clients learn of it) once its
                # replication offset moved: the master's pings move it, every second here.
                "--repl-ping-replica-period",
                "1",
                *(
                    ["--requirepass", self.password, "--masterauth", self.password]
                    if self.password
                    else []
                ),
                "--loglevel",
                "notice",
                "--logfile",
                f"redis-{port}.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # no servers left behind by a cluster that did not come up
            raise

    def _start(self, timeout: float) -> RedisCluster:
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            self._wait(lambda port=port: self.cmd(port, "PING").strip() == "PONG", timeout)
        if len(self.ports) == 1:  # redis-cli creates clusters of 3 masters or more
            self.cmd(self.ports[0], "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            self.wait_ok(timeout)
            return self
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
                *(["-a", self.password, "--no-auth-warning"] if self.password else []),
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        return self

    @staticmethod
    def _wait(check: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not get ready")
            time.sleep(0.05)

    def info(self, port: int) -> dict[str, str]:
        lines = self.cmd(port, "CLUSTER", "INFO").splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)

    def live_ports(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok and knows every slot, there are as many masters
        as asked for, and every live replica is in sync and listed in CLUSTER SLOTS (so that
        clients know it, and a failover has someone to promote)."""

        def ok() -> bool:
            for port in self.live_ports():
                info = self.info(port)
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
            if len(self.master_ports()) != self.masters:
                return False
            if not all(
                "master_link_status:up" in self.cmd(p, "INFO", "replication")
                for p in self.replica_ports()
            ):
                return False
            # ... and every node's CLUSTER SLOTS names them (clients learn replicas there).
            return all(self._slots_have_replicas(p) for p in self.live_ports())

        self._wait(ok, timeout)

    def _slots_have_replicas(self, port: int) -> bool:
        replicas_of: dict[str, int] = {}  # master id -> its live replicas
        for n in self.nodes():
            if "slave" in n[2] and "fail" not in n[2]:
                replicas_of[n[3]] = replicas_of.get(n[3], 0) + 1
        with sync_redis.Redis(port=port, socket_timeout=5, password=self.password) as client:
            ranges = client.execute_command("CLUSTER SLOTS")
        return bool(ranges) and all(
            len(r) - 3 == replicas_of.get(r[2][2].decode(), 0) for r in ranges
        )

    def replica_ports(self) -> list[int]:
        """Live replicas: a failover promotes one of them."""
        return [
            int(n[1].split("@")[0].rsplit(":", 1)[1])
            for n in self.nodes()
            if "slave" in n[2] and "fail" not in n[2]
        ]

    def nodes(self) -> list[list[str]]:
        """CLUSTER NODES as seen by a live node: id, address, flags, master, ..., slots."""
        port = self.live_ports()[0]
        return [line.split() for line in self.cmd(port, "CLUSTER", "NODES").splitlines() if line]

    def master_ports(self) -> list[int]:
        return sorted(
            int(n[1].split("@")[0].rsplit(":", 1)[1])
            for n in self.nodes()
            if "master" in n[2] and "fail" not in n[2] and len(n) > 8
        )

    def master_of(self, key: str) -> int:
        slot = int(self.cmd(self.live_ports()[0], "CLUSTER", "KEYSLOT", key))
        for n in self.nodes():
            if "master" not in n[2] or "fail" in n[2]:
                continue
            for part in n[8:]:
                low, _, high = part.partition("-")
                if part[0] != "[" and int(low) <= slot <= int(high or low):
                    return int(n[1].split("@")[0].rsplit(":", 1)[1])
        raise LookupError(f"no master serves {key!r}")

    def replicas_of(self, master: int) -> list[int]:
        nodes = self.nodes()
        (master_id,) = [n[0] for n in nodes if n[1].split("@")[0].endswith(f":{master}")]
        return [
            int(n[1].split("@")[0].rsplit(":", 1)[1])
            for n in nodes
            if "slave" in n[2] and n[3] == master_id and "fail" not in n[2]
        ]

    def signal(self, port: int, sig: signal.Signals) -> None:
        self.procs[port].send_signal(sig)

    def kill(self, port: int) -> None:
        """SIGKILL one node: no goodbye, as a crashed machine."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not os.environ.get("WSHUB_KEEP_CLUSTER"):
            shutil.rmtree(self.dir, ignore_errors=True)
