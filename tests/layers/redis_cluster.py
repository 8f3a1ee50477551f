"""A throw-away Redis Cluster for tests: 3 masters + 3 replicas on loopback ports.

Each node is a ``redis-server --cluster-enabled yes`` child process (see
``redis_server.py``), stopped by its PID. The cluster is formed with
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``. A
short ``cluster-node-timeout`` keeps failovers quick. Helpers kill a master
(SIGKILL), wait for its replica's promotion, restart the node (it rejoins as
a replica) and migrate a slot by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE,
SETSLOT NODE) as ``redis-cli --cluster reshard`` would.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from .redis_server import RedisServer, free_cluster_port

__all__ = ["LocalCluster", "NODE_TIMEOUT_MS"]

#: cluster-node-timeout: how long a silent master takes to be declared failed.
NODE_TIMEOUT_MS = 1000


class LocalCluster:
    """Six nodes forming one cluster; ``urls`` are the seed nodes to configure."""

    def __init__(self, workdir: Path, size: int = 6) -> None:
        self.workdir = Path(workdir)
        self.nodes: list[RedisServer] = []
        for i in range(size):
            self.nodes.append(
                RedisServer(
                    self.workdir / f"n{i}",
                    port=free_cluster_port(),
                    extra=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(NODE_TIMEOUT_MS),
                        # replicas sync at once (the default waits 5 s)
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            )

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{node.port}" for node in self.nodes[:3]]

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1"]
            + ["--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=timeout,
        )
        self.wait_healthy(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    # -- inspection -----------------------------------------------------------

    def client(self) -> RedisCluster:
        nodes = [ClusterNode("127.0.0.1", n.port) for n in self.nodes if n.running]
        return RedisCluster(startup_nodes=nodes, require_full_coverage=False)

    def node_client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every running node says cluster_state:ok and all 3 masters have a replica."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"cluster not healthy after {timeout}s; logs in {self.workdir}")

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not node.running:
                return False
            try:
                with self.node_client(node.port) as client:
                    if client.cluster("info").get("cluster_state") != "ok":
                        return False
                    if not self._masters_have_replicas(client.cluster("nodes")):
                        return False
                    if b"slave" in client.execute_command("ROLE")[0]:
                        if client.info("replication").get("master_link_status") != "up":
                            return False
            except redis.RedisError:
                return False
        return True

    @staticmethod
    def _masters_have_replicas(nodes: dict) -> bool:
        masters = {
            info["node_id"]: 0
            for info in nodes.values()
            if "master" in info["flags"] and "fail" not in info["flags"] and info["slots"]
        }
        for info in nodes.values():
            if "slave" in info["flags"] and "fail" not in info["flags"]:
                if info["master_id"] in masters:
                    masters[info["master_id"]] += 1
        return len(masters) == 3 and all(masters.values())

    def slot_owner(self, slot: int) -> RedisServer:
        """The node serving ``slot`` now."""
        with self.client() as client:
            node = client.nodes_manager.get_node_from_slot(slot)
            port = int(node.port)
        return next(n for n in self.nodes if n.port == port)

    def node_id(self, node: RedisServer) -> str:
        with self.node_client(node.port) as client:
            return str(client.execute_command("CLUSTER MYID").decode())

    # -- faults ------------------------------------------------------------------

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node (by its PID); ``restart`` brings it back as a replica."""
        assert node.running
        node.kill()

    def wait_promoted(self, slot: int, dead: RedisServer, timeout: float = 30.0) -> float:
        """Seconds until a node other than ``dead`` serves ``slot``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            for node in self.nodes:
                if node is dead or not node.running:
                    continue
                try:
                    with self.node_client(node.port) as client:
                        for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                            if start <= slot <= end and int(master[1]) != dead.port:
                                if client.cluster("info").get("cluster_state") == "ok":
                                    return time.monotonic() - started
                except redis.RedisError:
                    continue
            time.sleep(0.05)
        raise RuntimeError(f"slot {slot} not taken over within {timeout}s")

    def restart(self, node: RedisServer) -> None:
        """Start a killed node again (same port and nodes.conf) and wait for a healthy cluster."""
        node.start()
        self.wait_healthy()

    def migrate_slot(
        self, slot: int, target: RedisServer, between_batches=None, batch: int = 10
    ) -> int:
        """Move ``slot`` to ``target`` the way ``redis-cli --cluster reshard`` does.

        ``between_batches()`` runs after each MIGRATE batch, while the slot
        is half-moved (ASK redirections). Returns the number of keys moved.
        """
        source = self.slot_owner(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        src, dst = self.node_client(source.port), self.node_client(target.port)
        moved = 0
        try:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                if between_batches is not None:
                    between_batches()
            for node in self.nodes:
                if node.running:
                    with self.node_client(node.port) as client:
                        if b"master" in client.execute_command("ROLE")[0]:
                            client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        finally:
            src.close()
            dst.close()
        return moved
