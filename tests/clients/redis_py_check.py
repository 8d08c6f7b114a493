#!/usr/bin/env python3
"""Drives a raftkv cluster (or any Redis server) with redis-py and checks its replies.

Usage: redis_py_check.py --ports 6381,6382,6383 [--protocol 2|3] [--password P]
                         [--increments N]

Without --protocol the client keeps redis-py's default (RESP3, negotiated with HELLO 3);
with it, that protocol is asked for explicitly. With --password every client gives it
(redis-py sends it in HELLO 3 AUTH, or AUTH in RESP2). Every key lives under a fresh prefix, so
runs can share a cluster. Each check prints "ok: <name>" or "FAILED: <name>: <why>"; the
exit code is 1 if any check failed, 2 if the arguments are wrong.

The checks hold for a real Redis server too, which is how their expectations were checked.
"""

import argparse
import sys
import threading
import time
import traceback
import uuid

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError, WatchError
from redis.retry import Retry

# A client call that gets no reply in this long fails the check rather than hanging it.
SOCKET_TIMEOUT = 20

# Every byte value, and the bytes that break naive framing or text decoding.
BINARY = bytes(range(256)) + b"\x00\xff\r\n$-1\r\n*-1\r\n\x00"


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def expect(actual, expected, what):
    check(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


class Checks:
    def __init__(self, ports, protocol, password, increments):
        self.ports = ports
        self.protocol = protocol
        self.password = password
        self.increments = increments
        self.prefix = f"py{protocol or 'default'}:{uuid.uuid4().hex[:8]}:"
        # One client per node: writes through one node are read back through another.
        self.clients = [self.connect(port) for port in ports]
        self.r = self.clients[0]

    def connect(self, port, **overrides):
        kwargs = {
            "host": "127.0.0.1",
            "port": port,
            "decode_responses": False,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
        }
        if self.protocol is not None:
            kwargs["protocol"] = self.protocol
        if self.password is not None:
            kwargs["password"] = self.password
        kwargs.update(overrides)
        return redis.Redis(**kwargs)

    def key(self, name):
        return (self.prefix + name).encode()

    def other(self, i=1):
        return self.clients[i % len(self.clients)]

    def check_handshake(self):
        """The connection speaks the protocol asked for (RESP3 by default in redis-py 8)."""
        wanted = self.protocol or 3
        check(self.r.ping() is True, "PING did not answer PONG")
        conn = self.r.connection_pool.get_connection()
        try:
            expect(conn.protocol, wanted, "the connection's protocol")
            if wanted == 3:
                meta = conn.handshake_metadata
                check(isinstance(meta, dict), f"HELLO 3 replied {meta!r}, not a map")
                expect(meta.get(b"proto"), 3, "HELLO's proto field")
                check(b"version" in meta, f"HELLO has no version: {meta!r}")
        finally:
            self.r.connection_pool.release(conn)
        info = self.r.client_info()
        expect(info.get("resp"), str(wanted), "CLIENT INFO resp=")
        server = self.r.info("server")
        check("redis_version" in server, f"INFO server has no redis_version: {server!r}")
        expect(self.r.echo(b"a\x00b"), b"a\x00b", "ECHO of a binary message")
        client_id = self.r.client_id()
        check(isinstance(client_id, int), "CLIENT ID is not an integer")
        # JavaScript clients read integers as doubles, exact only up to 2^53.
        check(0 <= client_id < 2**53, f"CLIENT ID {client_id} is not below 2^53")

    def check_auth(self):
        """A wrong password or none is refused; without a password configured on the
        server, the default user takes any password, as in Redis."""
        port = self.ports[-1]
        if self.password is None:
            anyone = self.connect(port, username="default", password="anything")
            check(anyone.ping() is True, "the default user with a password was refused")
            return
        # redis-py retries a refused connection with backoff by default: once is enough.
        once = Retry(NoBackoff(), 0)
        for what, password in (("a wrong password", "wrong"), ("none", None)):
            client = self.connect(port, password=password, retry=once)
            try:
                client.set(self.key("forged"), b"x")
            except redis.AuthenticationError:
                pass
            except ResponseError as e:
                check("NOAUTH" in str(e) or "WRONGPASS" in str(e), f"the error for {what}: {e!r}")
            else:
                raise CheckFailed(f"a client with {what} wrote a key")
        expect(self.r.exists(self.key("forged")), 0, "the key the refused clients wrote")

    def check_binary_values(self):
        k = self.key("bin") + b"\x00\xff\r\n"
        check(self.r.set(k, BINARY) is True, "SET of a binary value did not reply OK")
        expect(self.r.get(k), BINARY, "GET of the binary value")
        expect(self.other().get(k), BINARY, "GET of the binary value from another node")
        expect(self.r.strlen(k), len(BINARY), "STRLEN of the binary value")
        expect(self.r.append(k, b"\x00"), len(BINARY) + 1, "APPEND's new length")
        expect(self.other(2).get(k), BINARY + b"\x00", "GET after APPEND")

    def check_nil_and_empty(self):
        missing, empty = self.key("missing"), self.key("empty")
        expect(self.r.get(missing), None, "GET of a missing key")
        check(self.r.set(empty, b"") is True, "SET of an empty value did not reply OK")
        expect(self.other().get(empty), b"", "GET of an empty value")
        expect(self.r.exists(empty), 1, "EXISTS of a key holding an empty value")
        expect(self.r.type(empty), b"string", "TYPE of a key")
        expect(self.r.type(missing), b"none", "TYPE of a missing key")
        expect(self.r.getdel(empty), b"", "GETDEL of an empty value")
        expect(self.r.get(empty), None, "GET after GETDEL")

    def check_del_exists(self):
        a, b, c, missing = (self.key(n) for n in ("del-a", "del-b", "del-c", "del-missing"))
        for k in (a, b, c):
            self.r.set(k, b"v")
        expect(self.r.exists(a, b, missing), 2, "EXISTS of two keys and a missing one")
        expect(self.r.exists(a, a), 2, "EXISTS of a key named twice")
        expect(self.other().delete(a, b, c, missing), 3, "DEL of three keys and a missing one")
        expect(self.r.delete(a), 0, "DEL of a deleted key")
        expect(self.r.exists(a, b, c), 0, "EXISTS after DEL")

    def check_mset_mget(self):
        pairs = {self.key(f"m{i}"): f"value {i}".encode() + b"\x00" for i in range(5)}
        check(self.r.mset(pairs) is True, "MSET did not reply OK")
        keys = list(pairs)
        got = self.other().mget(keys[:2] + [self.key("m-missing")] + keys[2:])
        expect(got, list(pairs.values())[:2] + [None] + list(pairs.values())[2:], "MGET")
        expect(self.r.msetnx({keys[0]: b"x", self.key("m-new"): b"y"}), False, "MSETNX")
        expect(self.r.get(self.key("m-new")), None, "a key of a refused MSETNX")

    def check_counters(self):
        k = self.key("counter")
        expect(self.r.incr(k), 1, "INCR of a missing key")
        expect(self.other().incrby(k, 41), 42, "INCRBY 41")
        expect(self.r.decr(k), 41, "DECR")
        expect(self.r.decrby(k, 50), -9, "DECRBY 50")
        expect(self.r.incrby(k, -1), -10, "INCRBY of a negative amount")
        expect(self.other(2).get(k), b"-10", "GET of the counter")
        text = self.key("not-a-number")
        self.r.set(text, b"12abc")
        for what, call in (
            ("INCR", lambda: self.r.incr(text)),
            ("INCRBY", lambda: self.r.incrby(text, 2)),
            ("DECR", lambda: self.r.decr(text)),
        ):
            try:
                call()
            except ResponseError as e:
                check("not an integer" in str(e), f"{what}'s error: {e}")
            else:
                raise CheckFailed(f"{what} of a non-integer did not fail")
        expect(self.r.get(text), b"12abc", "a non-integer after the failed INCRs")
        big = self.key("big")
        self.r.set(big, str(2**63 - 1).encode())
        try:
            self.r.incr(big)
        except ResponseError as e:
            check("overflow" in str(e), f"INCR overflow's error: {e}")
        else:
            raise CheckFailed("INCR past 2^63-1 did not fail")

    def check_conditional_set(self):
        k = self.key("cond")
        expect(self.r.setnx(k, b"1"), True, "SETNX of a missing key")
        expect(self.r.setnx(k, b"2"), False, "SETNX of an existing key")
        expect(self.r.set(k, b"3", nx=True), None, "SET NX of an existing key")
        expect(self.r.get(k), b"1", "the value after a refused SET NX")
        expect(self.r.set(k, b"4", xx=True), True, "SET XX of an existing key")
        missing = self.key("cond-missing")
        expect(self.r.set(missing, b"x", xx=True), None, "SET XX of a missing key")
        expect(self.r.exists(missing), 0, "a key of a refused SET XX")
        expect(self.r.set(k, b"5", get=True), b"4", "SET GET's old value")
        expect(self.r.set(self.key("cond-new"), b"n", get=True), None, "SET GET of a missing key")
        expect(self.r.set(k, b"6", xx=True, get=True), b"5", "SET XX GET")
        expect(self.r.getset(k, b"7"), b"6", "GETSET's old value")
        expect(self.other().get(k), b"7", "the value after GETSET")

    def check_transaction(self):
        k, n = self.key("tx"), self.key("tx-n")
        with self.r.pipeline(transaction=True) as p:
            p.set(k, b"a\x00")
            p.append(k, b"b")
            p.incr(n)
            p.incrby(n, 10)
            p.get(k)
            p.mget([k, self.key("tx-missing")])
            p.exists(k, n)
            replies = p.execute()
        expect(replies, [True, 3, 1, 11, b"a\x00b", [b"a\x00b", None], 2], "EXEC's replies")
        # A command that fails when run does not stop the others, as in Redis.
        with self.r.pipeline(transaction=True) as p:
            p.set(n, b"x")
            p.incr(n)
            p.set(k, b"after")
            replies = p.execute(raise_on_error=False)
        expect(replies[0], True, "SET inside EXEC")
        check(isinstance(replies[1], ResponseError), f"INCR of a non-integer: {replies[1]!r}")
        expect(replies[2], True, "SET after a failed command inside EXEC")
        expect(self.other().get(k), b"after", "the write after the failed command")
        # An empty transaction has an empty reply.
        with self.r.pipeline(transaction=True) as p:
            expect(p.execute(), [], "an empty transaction")

    def check_transaction_is_atomic(self):
        """A reader on another node never sees half of a transaction."""
        a, b = self.key("atomic-a"), self.key("atomic-b")
        self.r.mset({a: b"0", b: b"0"})
        rounds = 40
        torn = []
        done = threading.Event()

        def reader():
            reader_client = self.connect(self.ports[1 % len(self.ports)])
            while not done.is_set():
                va, vb = reader_client.mget([a, b])
                if va != vb:
                    torn.append((va, vb))
                    return

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(1, rounds + 1):
                with self.r.pipeline(transaction=True) as p:
                    p.set(a, str(i).encode())
                    p.set(b, str(i).encode())
                    p.execute()
        finally:
            done.set()
            thread.join(SOCKET_TIMEOUT)
        check(not torn, f"a reader saw a half-applied transaction: {torn}")
        expect(self.r.mget([a, b]), [str(rounds).encode()] * 2, "both keys at the end")

    def check_watch_aborts(self):
        """EXEC after a watched key changed runs nothing and raises WatchError."""
        k = self.key("watched")
        self.r.set(k, b"0")
        with self.r.pipeline() as p:
            p.watch(k)
            expect(p.get(k), b"0", "GET while watching")
            self.other().set(k, b"changed")
            p.multi()
            p.set(k, b"mine")
            try:
                p.execute()
            except WatchError:
                pass
            else:
                raise CheckFailed("EXEC ran although the watched key changed")
        expect(self.r.get(k), b"changed", "the watched key after the aborted EXEC")
        with self.r.pipeline() as p:
            p.watch(k)
            p.multi()
            p.set(k, b"mine")
            expect(p.execute(), [True], "EXEC with the watched key unchanged")
        with self.r.pipeline() as p:
            p.watch(k)
            p.unwatch()
            self.other().set(k, b"again")
            p.multi()
            p.set(k, b"unwatched")
            expect(p.execute(), [True], "EXEC after UNWATCH")

    def check_watch_counter(self):
        """The check-and-set retry loop from 10 threads on one counter loses no increment."""
        k = self.key("cas")
        threads_n, per_thread = 10, self.increments
        errors, retries = [], [0] * threads_n

        def worker(t):
            client = self.connect(self.ports[t % len(self.ports)])
            try:
                for _ in range(per_thread):
                    with client.pipeline() as p:
                        while True:
                            try:
                                p.watch(k)
                                v = int(p.get(k) or 0)
                                p.multi()
                                p.set(k, v + 1)
                                p.execute()
                                break
                            except WatchError:
                                retries[t] += 1
                                continue
            except Exception as e:  # reported below, with the thread that failed
                errors.append(f"thread {t}: {e!r}")

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - start
        check(not errors, f"workers failed: {errors}")
        total = threads_n * per_thread
        final = self.r.get(k)
        expect(final, str(total).encode(), f"the counter after {total} check-and-set increments")
        print(
            f"  {total} increments from {threads_n} threads, {sum(retries)} retries "
            f"after WatchError, {took:.1f} s"
        )

    def check_pipeline(self):
        """A non-transactional pipeline of many commands gets every reply, in order."""
        n = 300
        expected = []
        with self.r.pipeline(transaction=False) as p:
            for i in range(n):
                k = self.key(f"pipe{i}")
                p.set(k, f"v{i}".encode())
                p.get(k)
                p.incr(self.key("pipe-count"))
                expected += [True, f"v{i}".encode(), i + 1]
            p.get(self.key("pipe-missing"))
            expected.append(None)
            replies = p.execute()
        expect(len(replies), len(expected), "the number of pipelined replies")
        for i, (got, want) in enumerate(zip(replies, expected)):
            expect(got, want, f"pipelined reply {i}")

    def check_keyspace(self):
        keys = {self.key(f"scan{i}") for i in range(25)}
        self.r.mset({k: b"s" for k in keys})
        pattern = self.prefix.encode() + b"scan*"
        found = set(self.other().scan_iter(match=pattern, count=7))
        expect(found, keys, "SCAN MATCH")
        expect(set(self.r.keys(pattern)), keys, "KEYS")
        check(self.r.dbsize() >= len(keys), "DBSIZE is smaller than the keys just written")

    def run(self):
        checks = [
            (name[len("check_"):], getattr(self, name))
            for name in Checks.__dict__
            if name.startswith("check_")
        ]
        failed = []
        label = f"redis-py {redis.__version__}, protocol {self.protocol or 'default'}"
        print(f"{label}, nodes {self.ports}")
        for name, fn in checks:
            start = time.monotonic()
            try:
                fn()
            except CheckFailed as e:
                failed.append(name)
                print(f"FAILED: {name}: {e}")
            except Exception:
                failed.append(name)
                print(f"FAILED: {name}: unexpected error")
                traceback.print_exc(file=sys.stdout)
            else:
                print(f"ok: {name} ({time.monotonic() - start:.2f} s)")
        print(f"{label}: {len(checks) - len(failed)} of {len(checks)} checks passed")
        return not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", required=True, help="comma-separated Redis ports")
    parser.add_argument("--protocol", type=int, choices=(2, 3), default=None)
    parser.add_argument("--password", default=None, help="the server's requirepass")
    parser.add_argument("--increments", type=int, default=20, help="per WATCH thread")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    ok = Checks(ports, args.protocol, args.password, args.increments).run()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
