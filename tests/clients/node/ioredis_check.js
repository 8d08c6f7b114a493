#!/usr/bin/env node
// Drives a raftkv cluster (or any Redis server) with ioredis and checks its replies.
//
// Usage: node ioredis_check.js --ports 6381,6382,6383 [--protocol 2|3]
//
// Without --protocol the client keeps ioredis's default (RESP3, negotiated with HELLO 3).
// Every key lives under a fresh prefix, so runs can share a cluster. Each check prints
// "ok: <name>" or "FAILED: <name>: <why>"; the exit code is 1 if any check failed.
// The checks hold for a real Redis server too, which is how their expectations were checked.

"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const Redis = require("ioredis");
const { version } = require("ioredis/package.json");

// A command that gets no reply in this long fails its check rather than hanging it.
const COMMAND_TIMEOUT_MS = 20_000;
// The whole run, however it goes.
const RUN_LIMIT_MS = 60_000;

function parseArgs(argv) {
  const args = { ports: null, protocol: null };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (name === "--ports" && value) {
      args.ports = value.split(",").map(Number);
    } else if (name === "--protocol" && (value === "2" || value === "3")) {
      args.protocol = Number(value);
    } else {
      console.error("usage: ioredis_check.js --ports p1,p2,... [--protocol 2|3]");
      process.exit(2);
    }
  }
  if (!args.ports || args.ports.some((p) => !Number.isInteger(p))) {
    console.error("usage: ioredis_check.js --ports p1,p2,... [--protocol 2|3]");
    process.exit(2);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const prefix = `node${args.protocol ?? "default"}:${crypto.randomBytes(4).toString("hex")}:`;
const key = (name) => prefix + name;
const opened = [];

function connect(port, extra = {}) {
  const options = {
    host: "127.0.0.1",
    port,
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectTimeout: COMMAND_TIMEOUT_MS,
    // A check that loses its connection fails, rather than retrying without end.
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...extra,
  };
  if (args.protocol !== null) {
    options.protocol = args.protocol;
  }
  const client = new Redis(options);
  // Errors reach the check through its command's promise; without a listener an error
  // event would also be printed as unhandled.
  client.on("error", () => {});
  opened.push(client);
  return client;
}

// One client per node: writes through one node are read back through another.
const clients = args.ports.map((port) => connect(port));
const r = clients[0];
const other = (i = 1) => clients[i % clients.length];

// Every byte value, and bytes that break naive framing or text decoding.
const BINARY = Buffer.concat([
  Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
  Buffer.from("\x00\xff\r\n$-1\r\n*-1\r\n\x00", "latin1"),
]);

async function rejects(promise, pattern, what) {
  try {
    await promise;
  } catch (e) {
    assert.match(String(e.message), pattern, `${what}: wrong error`);
    return;
  }
  assert.fail(`${what} did not fail`);
}

const checks = {
  async handshake() {
    const wanted = args.protocol ?? 3;
    assert.equal(await r.ping(), "PONG", "PING");
    const info = await r.client("INFO");
    assert.match(String(info), new RegExp(`resp=${wanted}\\b`), "CLIENT INFO resp=");
    const server = await r.info("server");
    assert.match(String(server), /redis_version:/, "INFO server has redis_version");
    // A JavaScript number is exact only up to 2^53: the id must read back as CLIENT INFO says.
    const id = await r.client("ID");
    assert.equal(typeof id, "number", "CLIENT ID is an integer");
    const infoId = String(info).match(/\bid=(\d+)/)?.[1];
    assert.equal(String(id), infoId, "CLIENT ID read as a number equals CLIENT INFO's id=");
  },

  async binaryValues() {
    const k = Buffer.concat([Buffer.from(key("bin")), Buffer.from([0, 0xff, 13, 10])]);
    assert.equal(await r.set(k, BINARY), "OK", "SET of a binary value");
    assert.deepEqual(await r.getBuffer(k), BINARY, "GET of the binary value");
    assert.deepEqual(await other().getBuffer(k), BINARY, "GET from another node");
    assert.equal(await r.strlen(k), BINARY.length, "STRLEN of the binary value");
  },

  async nilAndEmpty() {
    assert.equal(await r.get(key("missing")), null, "GET of a missing key is null");
    assert.equal(await r.getBuffer(key("missing")), null, "getBuffer of a missing key");
    assert.equal(await r.set(key("empty"), ""), "OK", "SET of an empty value");
    assert.equal(await other().get(key("empty")), "", "GET of an empty value is ''");
    assert.deepEqual(await other().getBuffer(key("empty")), Buffer.alloc(0), "empty Buffer");
    assert.equal(await r.exists(key("empty")), 1, "EXISTS of an empty value");
  },

  async del() {
    const [a, b, c] = ["del-a", "del-b", "del-c"].map(key);
    await r.mset(a, "1", b, "2", c, "3");
    assert.equal(await other().del(a, b, c, key("del-missing")), 3, "DEL of 3 keys + 1 missing");
    assert.equal(await r.del(a), 0, "DEL of a deleted key");
    assert.equal(await r.exists(a, b, c), 0, "EXISTS after DEL");
  },

  async msetMget() {
    const values = [0, 1, 2].map((i) => Buffer.from([i, 0, 0xff, 0x80]));
    const keys = [0, 1, 2].map((i) => key(`m${i}`));
    assert.equal(await r.mset(keys[0], values[0], keys[1], values[1], keys[2], values[2]), "OK");
    const got = await other().mgetBuffer(keys[0], key("m-missing"), keys[1], keys[2]);
    assert.deepEqual(got, [values[0], null, values[1], values[2]], "MGET with a missing key");
    assert.deepEqual(await r.mget(key("m-none"), key("m-none2")), [null, null], "MGET of none");
  },

  async incr() {
    const k = key("counter");
    assert.equal(await r.incr(k), 1, "INCR of a missing key");
    assert.equal(await other().incrby(k, 41), 42, "INCRBY");
    assert.equal(await r.decr(k), 41, "DECR");
    assert.equal(await other(2).get(k), "41", "GET of the counter");
    await r.set(key("text"), "abc");
    await rejects(r.incr(key("text")), /not an integer/, "INCR of a non-integer");
    assert.equal(await r.get(key("text")), "abc", "the value after a failed INCR");
  },

  async multiExec() {
    const k = key("tx");
    const replies = await r
      .multi()
      .set(k, "a")
      .append(k, "b")
      .incr(key("tx-n"))
      .get(k)
      .mget(k, key("tx-missing"))
      .exec();
    assert.deepEqual(
      replies,
      [[null, "OK"], [null, 2], [null, 1], [null, "ab"], [null, ["ab", null]]],
      "EXEC's replies",
    );
    // A command failing at run time does not stop the others.
    const mixed = await r.multi().set(k, "x").incr(k).set(k, "after").exec();
    assert.equal(mixed[0][1], "OK", "SET inside EXEC");
    assert.match(String(mixed[1][0]), /not an integer/, "INCR of a non-integer inside EXEC");
    assert.equal(mixed[2][1], "OK", "SET after the failed command");
    assert.equal(await other().get(k), "after", "the write after the failed command");
    // A command refused while queuing aborts the whole transaction.
    const never = key("tx-never");
    const refused = r.multi().set(never, "1").call("GET").exec();
    await rejects(refused, /EXECABORT/, "EXEC after a refused command");
    assert.equal(await r.exists(never), 0, "a key of the aborted transaction");
    // A watched key written by another client: EXEC runs nothing and replies null.
    const w = key("watched");
    await r.set(w, "0");
    const watcher = connect(args.ports[0]);
    assert.equal(await watcher.watch(w), "OK", "WATCH");
    await other().set(w, "changed");
    const aborted = await watcher.multi().set(w, "mine").exec();
    assert.equal(aborted, null, "EXEC after the watched key changed");
    assert.equal(await r.get(w), "changed", "the watched key after the aborted EXEC");
    const ran = await watcher.multi().set(w, "mine").exec();
    assert.deepEqual(ran, [[null, "OK"]], "EXEC unwatches: the next one runs");
  },

  async pipeline() {
    const n = 300;
    const p = r.pipeline();
    const expected = [];
    for (let i = 0; i < n; i++) {
      p.set(key(`pipe${i}`), `v${i}`).get(key(`pipe${i}`)).incr(key("pipe-count"));
      expected.push([null, "OK"], [null, `v${i}`], [null, i + 1]);
    }
    p.get(key("pipe-missing"));
    expected.push([null, null]);
    const replies = await p.exec();
    assert.equal(replies.length, expected.length, "the number of pipelined replies");
    assert.deepEqual(replies, expected, "pipelined replies, in order");
  },

  async autoPipelining() {
    // Concurrent calls on one connection, written together: every INCR is answered once.
    const auto = connect(args.ports[1 % args.ports.length], { enableAutoPipelining: true });
    const k = key("auto");
    const n = 200;
    const replies = await Promise.all(Array.from({ length: n }, () => auto.incr(k)));
    const sorted = [...replies].sort((a, b) => a - b);
    assert.deepEqual(sorted, Array.from({ length: n }, (_, i) => i + 1), "each INCR's reply");
    assert.equal(await r.get(k), String(n), "the counter after concurrent INCRs");
  },
};

async function main() {
  const label = `ioredis ${version}, protocol ${args.protocol ?? "default"}`;
  console.log(`${label}, nodes ${args.ports.join(",")}`);
  let failed = 0;
  const names = Object.keys(checks);
  for (const name of names) {
    const start = Date.now();
    try {
      await checks[name]();
      console.log(`ok: ${name} (${((Date.now() - start) / 1000).toFixed(2)} s)`);
    } catch (e) {
      failed += 1;
      console.log(`FAILED: ${name}: ${e && e.stack ? e.stack : e}`);
    }
  }
  console.log(`${label}: ${names.length - failed} of ${names.length} checks passed`);
  return failed === 0;
}

const watchdog = setTimeout(() => {
  console.log(`FAILED: the checks did not finish within ${RUN_LIMIT_MS / 1000} s`);
  process.exit(1);
}, RUN_LIMIT_MS);

main()
  .then((ok) => {
    clearTimeout(watchdog);
    process.exitCode = ok ? 0 : 1;
    return Promise.all(opened.map((client) => client.quit().catch(() => client.disconnect())));
  })
  .catch((e) => {
    console.log(`FAILED: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  });
