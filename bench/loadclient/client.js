#!/usr/bin/env node
// The one load client for every bench target (bench/run.py starts it).
//
// Speaks plain WebSocket (wsbridge, Channels, the raw floor) and Socket.IO
// over WebSocket (Engine.IO v4 framing, written here on top of `ws`:
// "0{...}" open, "40" connect, "42[...]" event, "2"/"3" ping/pong).
//
// Talks to the harness with JSON lines: it prints {"event": "ready", ...}
// once its sockets are up and {"event": "result", ...} at the end; it reads
// commands on stdin ("go", "published <count>", "done"). Every mode is
// bounded in time (--timeout) and stops by itself.
//
//   node client.js --url ws://127.0.0.1:PORT/ws/chat/bench/ --proto ws \
//        --mode fanout|echo|idle|handshake --clients N [options]
"use strict";

const fs = require("fs");
const readline = require("readline");
const { performance } = require("perf_hooks");
const WebSocket = require("ws");

// ---------------------------------------------------------------- options --

function parseArgs(argv) {
  const opts = {
    url: null,
    proto: "ws", // ws | sio
    mode: "fanout",
    clients: 100,
    connectConcurrency: 200, // handshakes in flight while ramping up
    connectTimeout: 60, // s, for the whole ramp-up
    grace: 30, // s to wait for deliveries after "published"
    duration: 10, // s, echo and handshake
    intervalMs: 50, // echo: each client sends every intervalMs (open loop)
    closedLoop: false, // echo: send the next message when the reply arrives
    maxOutstanding: 20, // echo open loop: skip a tick past this many unanswered
    concurrency: 100, // handshake loops
    keepOpen: 0, // handshake: keep each connection open until this many are (then close all, again)
    maxHandshakes: 100000,
    timeout: 240, // s, hard cap on the whole client run
    samples: null, // file to write latency samples to (JSON array, ms)
    // Spread sockets over N loopback source addresses, in a /16 picked by --local-seed:
    // connect() gets slow when one source address has tens of thousands of
    // TIME_WAIT sockets left by earlier runs (the kernel scans for a free port).
    localAddrs: 16,
    localSeed: 0,
  };
  for (let i = 2; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in opts)) throw new Error(`unknown option ${argv[i]}`);
    if (typeof opts[key] === "boolean") {
      opts[key] = true;
      continue;
    }
    const value = argv[++i];
    opts[key] = typeof opts[key] === "number" || opts[key] === null && /^[0-9.]+$/.test(value)
      ? Number(value)
      : value;
  }
  if (!opts.url) throw new Error("--url is required");
  return opts;
}

const opts = parseArgs(process.argv);
const t0 = performance.now();
const cpu0 = process.cpuUsage();

function nowEpochMs() {
  // Same clock as the publishers' time.time() (CLOCK_REALTIME), sub-ms.
  return performance.timeOrigin + performance.now();
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function cpuSince(cpuStart, wallStartMs) {
  const used = process.cpuUsage(cpuStart);
  const wall = (performance.now() - wallStartMs) / 1000;
  const cpu = (used.user + used.system) / 1e6;
  return { cpu_s: round(cpu, 3), wall_s: round(wall, 3), cpu_ratio: round(wall > 0 ? cpu / wall : 0, 3) };
}

function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function stats(values) {
  if (values.length === 0) return { n: 0 };
  const sorted = Float64Array.from(values).sort();
  const pick = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n: sorted.length,
    min: round(sorted[0], 3),
    p50: round(pick(0.5), 3),
    p90: round(pick(0.9), 3),
    p99: round(pick(0.99), 3),
    max: round(sorted[sorted.length - 1], 3),
    mean: round(sum / sorted.length, 3),
  };
}

function writeSamples(values) {
  if (!opts.samples) return;
  fs.writeFileSync(opts.samples, "[" + values.map((v) => v.toFixed(2)).join(",") + "]");
}

// ------------------------------------------------------- one connection --
// A Conn hides the protocol: onReady fires once the client may send (open for
// plain WebSocket, the "40" namespace connect for Socket.IO); onPayload gets
// each application message as a parsed JSON value.

let addrIndex = 0;

class Conn {
  constructor(index, handlers) {
    this.index = index;
    this.handlers = handlers;
    this.ready = false;
    this.closed = false;
    const n = Math.max(1, opts.localAddrs | 0);
    const k = addrIndex++ % n;
    const localAddress = `127.${10 + (opts.localSeed % 240)}.${k >> 8}.${1 + (k & 255)}`;
    this.ws = new WebSocket(opts.url, {
      perMessageDeflate: false, // no compression on any target: same bytes for all
      handshakeTimeout: 30000,
      localAddress,
    });
    this.ws.on("open", () => {
      if (opts.proto === "ws") this._ready();
      // Socket.IO: wait for the Engine.IO open packet, then connect "/".
    });
    this.ws.on("message", (data, isBinary) => this._message(isBinary ? data : data.toString()));
    this.ws.on("error", (err) => {
      this.error = err.message;
    });
    this.ws.on("close", (code) => {
      const wasReady = this.ready;
      this.closed = true;
      this.ready = false;
      if (this.handlers.onClose) this.handlers.onClose(this, code, wasReady);
    });
  }

  _ready() {
    if (this.ready) return;
    this.ready = true;
    if (this.handlers.onReady) this.handlers.onReady(this);
  }

  _message(text) {
    if (opts.proto === "ws") {
      this.handlers.onPayload && this.handlers.onPayload(this, parsePlain(text));
      return;
    }
    // Engine.IO v4 over WebSocket: one packet per frame.
    const type = text[0];
    if (type === "4") {
      const sioType = text[1];
      if (sioType === "3") {
        // 43<id>[data]: an ack (the echo reply)
        const arr = JSON.parse(text.slice(2).replace(/^[0-9]+/, ""));
        this.handlers.onPayload && this.handlers.onPayload(this, arr[0], "ack");
      } else if (sioType === "2") {
        // 42["event", data] (no namespace, no ack id: what the bench servers send)
        const arr = JSON.parse(text.slice(2));
        this.handlers.onPayload && this.handlers.onPayload(this, arr[1], arr[0]);
      } else if (sioType === "0") {
        this._ready();
      } else if (sioType === "4") {
        this.error = "socket.io connect_error " + text.slice(2);
        this.ws.close();
      }
    } else if (type === "2") {
      this.ws.send("3" + text.slice(1)); // pong
    } else if (type === "0") {
      this.ws.send("40"); // namespace "/" connect
    } else if (type === "1") {
      this.ws.close();
    }
  }

  send(name, obj, ackId) {
    if (!this.ready || this.ws.readyState !== WebSocket.OPEN) return false;
    const body = JSON.stringify(obj);
    // Socket.IO: with an ack id the server's handler answers with its return value
    // ("43<id>[...]"), straight to this socket; without one it is a plain event.
    this.ws.send(opts.proto === "sio" ? `42${ackId === undefined ? "" : ackId}["${name}",${body}]` : body);
    return true;
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(1000);
    }
  }

  terminate() {
    this.ws.terminate();
  }
}

function parsePlain(text) {
  let obj = JSON.parse(text);
  // Channels' tutorial consumer wraps the payload: {"message": ...}
  if (obj && obj.message !== undefined) obj = obj.message;
  if (typeof obj === "string") obj = JSON.parse(obj);
  return obj;
}

// ------------------------------------------------------------- ramp-up --

function connectAll(count, handlers) {
  // Opens `count` connections with at most connectConcurrency in flight.
  return new Promise((resolve) => {
    const conns = [];
    let started = 0;
    let settled = 0;
    let ok = 0;
    const start = performance.now();
    const connectMs = [];
    const deadline = setTimeout(() => finish(true), opts.connectTimeout * 1000);
    let done = false;
    function finish(timedOut) {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      resolve({
        conns,
        connected: ok,
        failed: count - ok,
        timed_out: timedOut,
        ramp_s: round((performance.now() - start) / 1000, 3),
        connect_ms: stats(connectMs),
      });
    }
    function settle() {
      settled++;
      if (started < count) startOne();
      if (settled >= count) finish(false);
    }
    function startOne() {
      const index = started++;
      const begin = performance.now();
      let counted = false;
      const conn = new Conn(index, {
        ...handlers,
        onReady: (c) => {
          if (!counted) {
            counted = true;
            ok++;
            connectMs.push(performance.now() - begin);
            settle();
          }
          handlers.onReady && handlers.onReady(c);
        },
        onClose: (c, code, wasReady) => {
          if (!counted) {
            counted = true;
            settle();
          }
          handlers.onClose && handlers.onClose(c, code, wasReady);
        },
      });
      conns.push(conn);
    }
    for (let i = 0; i < Math.min(count, opts.connectConcurrency); i++) startOne();
  });
}

// ------------------------------------------------------------ commands --

const waiters = [];
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const [cmd, ...rest] = line.trim().split(/\s+/);
  for (const w of waiters.splice(0)) w(cmd, rest);
});
rl.on("close", () => {
  for (const w of waiters.splice(0)) w("eof", []);
});
function nextCommand() {
  return new Promise((resolve) => waiters.push((cmd, rest) => resolve({ cmd, rest })));
}

const hardStop = setTimeout(() => {
  emit({ event: "error", error: `client hard timeout after ${opts.timeout}s` });
  process.exit(3);
}, opts.timeout * 1000);

function finish(result) {
  result.client_cpu = cpuSince(cpu0, t0);
  emit({ event: "result", mode: opts.mode, proto: opts.proto, ...result });
  clearTimeout(hardStop);
  // Leave without waiting for close handshakes: the harness stops the server.
  setTimeout(() => process.exit(0), 50);
}

// --------------------------------------------------------------- modes --

async function fanout() {
  const maxSeq = 1000;
  const latencies = [];
  let seen = null; // Uint8Array(clients * maxSeq), allocated once we know N
  let received = 0;
  let duplicates = 0;
  let droppedConns = 0;
  let expected = Infinity;
  let onProgress = null;
  const firstSeen = { at: null };
  const seqMax = []; // worst latency of each message (diagnoses stalls)
  const seqCount = [];
  const handlers = {
    onPayload: (conn, msg) => {
      const now = nowEpochMs();
      if (!msg || typeof msg.seq !== "number") return;
      const slot = conn.index * maxSeq + (msg.seq % maxSeq);
      if (seen[slot]) {
        duplicates++;
        return;
      }
      seen[slot] = 1;
      received++;
      if (firstSeen.at === null) firstSeen.at = now;
      const lat = now - msg.ts;
      latencies.push(lat);
      const q = msg.seq % maxSeq;
      if (!(lat <= seqMax[q])) seqMax[q] = lat;
      seqCount[q] = (seqCount[q] || 0) + 1;
      if (received >= expected && onProgress) onProgress();
    },
    onClose: (conn, code, wasReady) => {
      if (wasReady) droppedConns++;
    },
  };
  seen = new Uint8Array(opts.clients * maxSeq);
  const ramp = await connectAll(opts.clients, handlers);
  emit({ event: "ready", connected: ramp.connected, failed: ramp.failed, ramp_s: ramp.ramp_s });
  const cpuMeasure = process.cpuUsage();
  const tMeasure = performance.now();
  let published = 0;
  for (;;) {
    const { cmd, rest } = await nextCommand();
    if (cmd === "published") {
      published = Number(rest[0]);
      break;
    }
    if (cmd === "eof" || cmd === "done") break;
  }
  expected = ramp.connected * published;
  const graceStart = performance.now();
  if (received < expected) {
    await new Promise((resolve) => {
      onProgress = resolve;
      setTimeout(resolve, opts.grace * 1000);
    });
  }
  const measureCpu = cpuSince(cpuMeasure, tMeasure);
  writeSamples(latencies);
  finish({
    clients: opts.clients,
    connected: ramp.connected,
    connect_failed: ramp.failed,
    ramp_s: ramp.ramp_s,
    connect_ms: ramp.connect_ms,
    published,
    expected,
    delivered: received,
    delivered_ratio: expected > 0 ? round(received / expected, 5) : 0,
    duplicates,
    dropped_connections: droppedConns,
    waited_after_publish_s: round((performance.now() - graceStart) / 1000, 3),
    latency_ms: stats(latencies),
    measure_cpu: measureCpu,
    per_message_max_ms: seqMax.slice(0, published).map((v) => round(v || 0, 1)),
    per_message_delivered: seqCount.slice(0, published).map((v) => v || 0),
  });
}

async function echo() {
  const rtts = [];
  let sent = 0;
  let received = 0;
  let skipped = 0;
  let droppedConns = 0;
  let running = false;
  const outstanding = new Map(); // conn.index -> count
  const handlers = {
    onPayload: (conn, msg) => {
      if (!msg || typeof msg.t !== "number") return;
      const rtt = performance.now() - msg.t;
      received++;
      outstanding.set(conn.index, (outstanding.get(conn.index) || 1) - 1);
      if (running) {
        rtts.push(rtt);
        if (opts.closedLoop) sendOne(conn);
      }
    },
    onClose: (conn, code, wasReady) => {
      if (wasReady) droppedConns++;
    },
  };
  let seq = 0;
  function sendOne(conn) {
    const n = seq++;
    if (conn.send("echo", { t: performance.now(), c: conn.index, n }, n)) {
      sent++;
      outstanding.set(conn.index, (outstanding.get(conn.index) || 0) + 1);
    }
  }
  const ramp = await connectAll(opts.clients, handlers);
  emit({ event: "ready", connected: ramp.connected, failed: ramp.failed, ramp_s: ramp.ramp_s });
  const { cmd } = await nextCommand();
  if (cmd !== "go") return finish({ aborted: cmd });
  const cpuMeasure = process.cpuUsage();
  const tMeasure = performance.now();
  running = true;
  const timers = [];
  const live = ramp.conns.filter((c) => c.ready);
  if (opts.closedLoop) {
    for (const c of live) sendOne(c);
  } else {
    // Spread the clients' ticks over one interval so sends do not come in bursts.
    live.forEach((c, i) => {
      const offset = (i * opts.intervalMs) / live.length;
      timers.push(
        setTimeout(() => {
          const tick = () => {
            if ((outstanding.get(c.index) || 0) >= opts.maxOutstanding) skipped++;
            else sendOne(c);
          };
          tick();
          timers.push(setInterval(tick, opts.intervalMs));
        }, offset),
      );
    });
  }
  await new Promise((resolve) => setTimeout(resolve, opts.duration * 1000));
  const elapsed = (performance.now() - tMeasure) / 1000;
  const receivedInWindow = rtts.length;
  running = false;
  emit({ event: "window_end" }); // the harness stops its CPU meters here
  for (const t of timers) {
    clearTimeout(t);
    clearInterval(t);
  }
  const measureCpu = cpuSince(cpuMeasure, tMeasure);
  // Late replies still count as delivered, not in the rate.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  writeSamples(rtts);
  finish({
    clients: opts.clients,
    connected: ramp.connected,
    connect_failed: ramp.failed,
    closed_loop: opts.closedLoop,
    interval_ms: opts.intervalMs,
    duration_s: round(elapsed, 3),
    sent,
    replies_in_window: receivedInWindow,
    replies_total: received,
    skipped_ticks: skipped,
    offered_per_s: opts.closedLoop ? null : round((live.length * 1000) / opts.intervalMs, 1),
    msgs_per_s: round(receivedInWindow / elapsed, 1),
    dropped_connections: droppedConns,
    rtt_ms: stats(rtts),
    measure_cpu: measureCpu,
  });
}

async function idle() {
  let droppedConns = 0;
  const ramp = await connectAll(opts.clients, {
    onClose: (conn, code, wasReady) => {
      if (wasReady) droppedConns++;
    },
  });
  emit({ event: "ready", connected: ramp.connected, failed: ramp.failed, ramp_s: ramp.ramp_s });
  const cpuMeasure = process.cpuUsage();
  const tMeasure = performance.now();
  await nextCommand(); // "done" (the harness has read the server's memory)
  const stillOpen = ramp.conns.filter((c) => c.ready && !c.closed).length;
  finish({
    clients: opts.clients,
    connected: ramp.connected,
    connect_failed: ramp.failed,
    ramp_s: ramp.ramp_s,
    connect_ms: ramp.connect_ms,
    still_open: stillOpen,
    dropped_connections: droppedConns,
    measure_cpu: cpuSince(cpuMeasure, tMeasure),
  });
}

async function handshake() {
  if (opts.keepOpen > 0) return handshakeKeptOpen();
  const latencies = [];
  let completed = 0;
  let failed = 0;
  let started = 0;
  const errors = {};
  const tStart = performance.now();
  const deadline = tStart + opts.duration * 1000;
  function loop() {
    return new Promise((resolve) => {
      const next = () => {
        if (performance.now() >= deadline || started >= opts.maxHandshakes) return resolve();
        started++;
        const begin = performance.now();
        let opened = false;
        new Conn(started, {
          onReady: (c) => {
            opened = true;
            latencies.push(performance.now() - begin);
            c.close();
          },
          onClose: (c) => {
            if (opened) completed++;
            else {
              failed++;
              countError(errors, c);
            }
            setImmediate(next);
          },
        });
      };
      next();
    });
  }
  const loops = [];
  for (let i = 0; i < opts.concurrency; i++) loops.push(loop());
  await Promise.all(loops);
  const elapsed = (performance.now() - tStart) / 1000;
  writeSamples(latencies);
  finish({
    concurrency: opts.concurrency,
    duration_s: round(elapsed, 3),
    completed,
    failed,
    errors,
    handshakes_per_s: round(completed / elapsed, 1),
    handshake_ms: stats(latencies),
  });
}

function countError(errors, c) {
  const key = c.error || "closed before open";
  errors[key] = (errors[key] || 0) + 1;
}

// Rounds of: open --keep-open connections (--concurrency in flight) and keep every one
// open until all are, then close them all and wait for the closes. Only the opening
// phases are timed: handshakes/s is what a server holding that many connections takes.
async function handshakeKeptOpen() {
  const latencies = [];
  const errors = {};
  let completed = 0;
  let failed = 0;
  let rounds = 0;
  let openSeconds = 0;
  const tStart = performance.now();
  const deadline = tStart + opts.duration * 1000;
  while (performance.now() < deadline && completed < opts.maxHandshakes) {
    const conns = [];
    const roundStart = performance.now();
    await new Promise((resolve) => {
      let started = 0;
      let settled = 0;
      const next = () => {
        if (started >= opts.keepOpen) return;
        started++;
        const begin = performance.now();
        let opened = false;
        const conn = new Conn(started, {
          onReady: () => {
            opened = true;
            latencies.push(performance.now() - begin);
            completed++;
            if (++settled === opts.keepOpen) resolve();
            setImmediate(next);
          },
          onClose: (c) => {
            if (opened) return;
            failed++;
            countError(errors, c);
            if (++settled === opts.keepOpen) resolve();
            setImmediate(next);
          },
        });
        conns.push(conn);
      };
      for (let i = 0; i < Math.min(opts.concurrency, opts.keepOpen); i++) next();
      // A round that cannot finish (a server stuck) still ends, bounded.
      const stuck = setTimeout(resolve, Math.max(1000, deadline - performance.now() + 30000));
      stuck.unref();
    });
    openSeconds += (performance.now() - roundStart) / 1000;
    rounds++;
    await Promise.all(
      conns.map(
        (c) =>
          new Promise((resolve) => {
            if (c.closed) return resolve();
            const timer = setTimeout(() => (c.terminate(), resolve()), 10000);
            c.ws.once("close", () => (clearTimeout(timer), resolve()));
            c.close();
          })
      )
    );
  }
  writeSamples(latencies);
  finish({
    concurrency: opts.concurrency,
    keep_open: opts.keepOpen,
    rounds,
    duration_s: round((performance.now() - tStart) / 1000, 3),
    open_phase_s: round(openSeconds, 3),
    completed,
    failed,
    errors,
    handshakes_per_s: round(completed / openSeconds, 1),
    handshake_ms: stats(latencies),
  });
}

const modes = { fanout, echo, idle, handshake };
if (!modes[opts.mode]) throw new Error(`unknown mode ${opts.mode}`);
modes[opts.mode]().catch((err) => {
  emit({ event: "error", error: String(err && err.stack ? err.stack : err) });
  process.exit(2);
});
