/*! wsbridge.js: the browser client of wsbridge (WebSocket first, long-poll fallback).
 *
 * One source file, no build step. Use it as an ES module:
 *
 *     import { WSBridge } from "/_wsbridge/wsbridge.js";
 *     const bridge = new WSBridge("/ws/chat/lobby/");
 *
 * or from a classic script tag, which defines window.WSBridge:
 *
 *     <script src="/_wsbridge/wsbridge.js"></script>
 *
 * (wsbridge's server drops the final `export` line when the browser fetches
 * the file as a classic script, told by Sec-Fetch-Mode, or with ?classic=1).
 * The wire protocol is described in docs/topics/protocol.rst; the API in
 * docs/topics/browser-client.rst and wsbridge.d.ts.
 */
(function (root) {
  "use strict";

  var STORAGE_KEY = "wsbridge.transport";
  // Close codes after which the client stays closed (see should_reconnect in
  // wsbridge/protocol/envelope.py): normal, policy, too big, 4000-4499.
  function defaultShouldReconnect(code) {
    if (code === 1000 || code === 1008 || code === 1009) return false;
    return !(code >= 4000 && code <= 4499);
  }

  var DEFAULTS = {
    transports: ["websocket", "longpoll"],
    prefix: "/_wsbridge",
    url: null,
    protocols: [],
    reconnect: true,
    minDelay: 500,
    maxDelay: 30000,
    maxRetries: Infinity,
    queueSize: 256,
    connectTimeout: 5000,
    remember: true,
    credentials: "same-origin",
    shouldReconnect: defaultShouldReconnect,
    // Connect tokens (clients without cookies; docs/topics/identity.rst): a function
    // returning (a Promise of) a token string or {token, expires_in}. Called before
    // every connection attempt and again before the token expires (the new token is
    // sent over the open connection: no reconnect).
    token: null,
    tokenIn: "protocol", // or "query" (?access_token=...: lands in proxies' logs)
    refreshAt: 0.8, // refresh after this fraction of expires_in
    recover: true,
  };
  var REFRESH_KEY = "wsbridge.refresh", REFRESHED_KEY = "wsbridge.refreshed";

  function storage() {
    try {
      return root.sessionStorage || null;
    } catch (e) {
      return null; // blocked third-party storage
    }
  }

  function makeEvent(type, fields) {
    var event = new Event(type);
    for (var key in fields) event[key] = fields[key];
    return event;
  }

  function toBase64(buffer) {
    var bytes = new Uint8Array(buffer), text = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  function fromBase64(text) {
    var raw = atob(text), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function decodeStream(data) {
    if (typeof data !== "string" || data.charAt(0) !== "{") return null;
    try {
      var obj = JSON.parse(data);
    } catch (e) {
      return null;
    }
    if (!obj || typeof obj.stream !== "string" || !("payload" in obj)) return null;
    if (Object.keys(obj).length !== 2) return null;
    return obj;
  }

  // -- transports: each calls hooks.open(subprotocol), hooks.message(data),
  //    hooks.close(code, reason, opened) exactly as a WebSocket would -----------

  // A frame stamped by the server (see wsbridge/protocol/recovery.py):
  // {"wsb": {"g": group, "p": position}, "text"|"bytes": ...} or a recovery notice.
  function decodeStamp(data) {
    if (typeof data !== "string" || data.slice(0, 7) !== '{"wsb":') return null;
    try {
      var obj = JSON.parse(data);
    } catch (e) {
      return null;
    }
    return obj && obj.wsb && typeof obj.wsb.g === "string" ? obj : null;
  }

  function WebSocketTransport(bridge, hooks) {
    var url = bridge._baseURL().replace(/^http/, "ws") + bridge._connectPath("query");
    var protocols = bridge.options.protocols.slice();
    if (bridge._token && bridge.options.tokenIn !== "query") {
      protocols = ["wsbridge.bearer", "wsbridge.token." + bridge._token].concat(protocols);
    }
    var ws = new root.WebSocket(url, protocols);
    var opened = false, done = false;
    ws.binaryType = "arraybuffer";
    var timer = setTimeout(function () {
      // A proxy that swallows the upgrade: count it as blocked.
      if (!opened) finish(1006, "connect timeout");
    }, bridge.options.connectTimeout);
    function finish(code, reason) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch (e) {}
      hooks.close(code, reason, opened);
    }
    ws.onopen = function () {
      opened = true;
      clearTimeout(timer);
      hooks.open(ws.protocol || null);
    };
    ws.onmessage = function (ev) {
      hooks.message(ev.data);
    };
    ws.onclose = function (ev) {
      finish(ev.code || 1006, ev.reason || "");
    };
    this.send = function (data) {
      ws.send(data);
      return true;
    };
    this.close = function (code, reason) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        ws.close(code, reason);
      } catch (e) {
        ws.close();
      }
    };
  }

  function LongPollTransport(bridge, hooks) {
    var base = bridge._baseURL() + bridge.options.prefix + "/lp/";
    var credentials = bridge.options.credentials;
    var token = null, seen = 0, sentSeq = 0, done = false, opened = false;
    var outbox = [], inflight = [], sending = false, pollTimeout = 25, sessionTimeout = 60;
    var controllers = [];
    var self = this;

    function post(op, body, timeoutMs) {
      var controller = new AbortController();
      controllers.push(controller);
      var timer = setTimeout(function () {
        controller.abort();
      }, timeoutMs);
      // text/plain keeps cross-origin requests "simple" (no preflight).
      return fetch(base + op, {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "Content-Type": "text/plain;charset=UTF-8" },
        credentials: credentials,
        cache: "no-store",
        signal: controller.signal,
      }).then(function (response) {
        return response.json().then(
          function (json) {
            return { status: response.status, body: json };
          },
          function () {
            return { status: response.status, body: {} };
          }
        );
      }).finally(function () {
        clearTimeout(timer);
        controllers.splice(controllers.indexOf(controller), 1);
      });
    }

    function finish(code, reason) {
      if (done) return;
      done = true;
      controllers.slice().forEach(function (c) {
        c.abort();
      });
      hooks.close(code, reason, opened);
    }

    // Retry a request over transient failures until the session would have expired.
    function retrying(op, makeBody, timeoutMs) {
      var started = Date.now(), delay = 250;
      function attempt() {
        if (done) return Promise.reject(new Error("closed"));
        return post(op, makeBody(), timeoutMs).then(
          function (answer) {
            var transient = answer.status === 502 || answer.status === 503 || answer.status === 504;
            if (transient && Date.now() - started < sessionTimeout * 1000) return later();
            return answer;
          },
          function (error) {
            if (done || Date.now() - started >= sessionTimeout * 1000) throw error;
            return later();
          }
        );
      }
      function later() {
        return new Promise(function (resolve) {
          setTimeout(resolve, delay);
          delay = Math.min(delay * 2, 4000);
        }).then(attempt);
      }
      return attempt();
    }

    function adopt(answer) {
      // After a server restart another process took the session over: its answers
      // carry the new token, which every later request must use.
      if (answer.body && typeof answer.body.token === "string") token = answer.body.token;
    }

    function lost(answer) {
      // 404/410: the session is gone (server restarted or expired); others: a bug.
      var code = answer && (answer.status === 404 || answer.status === 410) ? 1006 : 1002;
      finish(code, (answer && answer.body && answer.body.error) || "long-poll session lost");
    }

    function pollLoop() {
      if (done) return;
      retrying("poll", function () {
        return { token: token, ack: seen };
      }, (pollTimeout + 15) * 1000).then(function (answer) {
        if (done) return;
        if (answer.status === 409) return pollLoop(); // replaced by our own newer poll
        if (answer.status !== 200) return lost(answer);
        adopt(answer);
        var messages = answer.body.messages || [];
        for (var i = 0; i < messages.length && !done; i++) {
          var m = messages[i];
          if (m.seq <= seen) continue; // delivered before: that answer was a retry
          seen = m.seq;
          if ("close" in m) {
            // Acking the close frame ends the session on the server.
            post("poll", { token: token, ack: seen }, 5000).catch(function () {});
            return finish(m.close, m.reason || "");
          }
          try {
            hooks.message("bytes" in m ? fromBase64(m.bytes) : m.text);
          } catch (error) {
            // Report it without breaking the poll loop (a WebSocket would do the same).
            setTimeout(function () {
              throw error;
            });
          }
        }
        pollLoop();
      }, function () {
        finish(1006, "long-poll server unreachable");
      });
    }

    function flush() {
      if (sending || done || !token || (!outbox.length && !inflight.length)) return;
      sending = true;
      while (outbox.length && inflight.length < 100) {
        var item = outbox.shift();
        sentSeq += 1;
        inflight.push(typeof item === "string"
          ? { seq: sentSeq, text: item }
          : { seq: sentSeq, bytes: toBase64(item) });
      }
      retrying("send", function () {
        return { token: token, messages: inflight };
      }, 15000).then(function (answer) {
        sending = false;
        if (answer.status !== 200) return lost(answer);
        adopt(answer);
        inflight = inflight.filter(function (m) {
          return m.seq > answer.body.ack;
        });
        flush();
      }, function () {
        sending = false;
        finish(1006, "long-poll server unreachable");
      });
    }

    this.send = function (data) {
      outbox.push(data);
      flush();
      return true;
    };
    this.unsent = function () {
      // Messages the server never confirmed: the bridge queues them again.
      return inflight.map(function (m) {
        return "text" in m ? m.text : fromBase64(m.bytes);
      }).concat(outbox);
    };
    this.close = function (code, reason) {
      if (done) return;
      done = true;
      controllers.slice().forEach(function (c) {
        c.abort();
      });
      if (token) post("close", { token: token, code: code, reason: reason || "" }, 5000)
        .catch(function () {});
    };
    this.beacon = function () {
      // pagehide: tell the server at once instead of letting the session expire.
      if (!token || done || !navigator.sendBeacon) return;
      var body = new Blob([JSON.stringify({ token: token, code: 1001 })], { type: "text/plain" });
      navigator.sendBeacon(base + "close", body);
    };

    // The token rides in the POST body, never in a URL.
    post("open", { path: bridge._connectPath("body"), subprotocols: bridge.options.protocols },
      bridge.options.connectTimeout + 10000).then(function (answer) {
      if (done) return;
      if (answer.status !== 200) {
        return finish(answer.status === 403 ? 1008 : 1006,
          (answer.body && answer.body.error) || "long-poll open refused (" + answer.status + ")");
      }
      token = answer.body.token;
      pollTimeout = answer.body.poll_timeout || pollTimeout;
      sessionTimeout = answer.body.session_timeout || sessionTimeout;
      opened = true;
      hooks.open(answer.body.subprotocol || null);
      pollLoop();
      flush();
    }, function () {
      finish(1006, "long-poll server unreachable");
    });
    self.kind = "longpoll";
  }

  // -- streams ---------------------------------------------------------------------

  function Stream(bridge, name) {
    var target = new EventTarget();
    target.name = name;
    target.send = function (payload) {
      return bridge.send(JSON.stringify({ stream: name, payload: payload }));
    };
    target.on = function (type, listener) {
      target.addEventListener(type, listener);
      return function () {
        target.removeEventListener(type, listener);
      };
    };
    return target;
  }

  // -- the bridge ------------------------------------------------------------------

  class WSBridge extends EventTarget {
    constructor(path, options) {
      super();
      if (typeof path !== "string" || path.charAt(0) !== "/") {
        throw new TypeError("WSBridge: path must start with '/', e.g. \"/ws/chat/\"");
      }
      this.path = path;
      this.options = Object.assign({}, DEFAULTS, options || {});
      this.transport = null;
      this.readyState = "connecting";
      this.subprotocol = null;
      this.attempt = 0;
      this._queue = [];
      this._current = null;
      this._streams = new Map();
      this._timer = null;
      this._closedByUser = false;
      this._wsWorked = false;
      this._positions = {};
      var bridge = this;
      this._onPageHide = function () {
        if (bridge._current && bridge._current.beacon) bridge._current.beacon();
      };
      if (root.addEventListener) root.addEventListener("pagehide", this._onPageHide);
      this._token = null;
      this._refreshTimer = null;
      this._connect();
    }

    /** Send text, or binary data (ArrayBuffer / typed array); queued while disconnected. */
    send(data) {
      if (ArrayBuffer.isView(data)) {
        data = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
      }
      if (typeof data !== "string" && !(data instanceof ArrayBuffer)) {
        throw new TypeError("WSBridge.send takes a string, an ArrayBuffer or a typed array");
      }
      if (this._closedByUser || this.readyState === "closed") return false;
      if (this.readyState === "open" && this._current) return this._current.send(data);
      if (this._queue.length >= this.options.queueSize) return false; // full: dropped
      this._queue.push(data);
      return true;
    }

    /** Send a value as JSON text. */
    sendJSON(value) {
      return this.send(JSON.stringify(value));
    }

    /** The named stream: stream.send(payload), stream.on("message", e => e.data). */
    stream(name) {
      if (typeof name !== "string" || !name) throw new TypeError("a stream needs a name");
      if (!this._streams.has(name)) this._streams.set(name, Stream(this, name));
      return this._streams.get(name);
    }

    /** Listen to "open", "close", "reconnecting" or "message"; returns an unsubscribe function. */
    on(type, listener) {
      this.addEventListener(type, listener);
      var self = this;
      return function () {
        self.removeEventListener(type, listener);
      };
    }

    /** Close for good (no reconnection). */
    close(code, reason) {
      code = code || 1000;
      this._closedByUser = true;
      clearTimeout(this._timer);
      clearTimeout(this._refreshTimer);
      if (root.removeEventListener) root.removeEventListener("pagehide", this._onPageHide);
      var current = this._current;
      this._current = null;
      if (current) current.close(code, reason || "");
      if (this.readyState !== "closed") {
        this.readyState = "closed";
        this.dispatchEvent(makeEvent("close", { code: code, reason: reason || "", willReconnect: false }));
      }
    }

    /** The last position seen per history group ({group: "epoch:offset"}), sent on reconnect. */
    positions() {
      return Object.assign({}, this._positions);
    }

    _connectPath(where) {
      // The path with its token (where the token goes: "query" or "body"), asking the
      // server to stamp positions and to replay what was missed since them.
      var path = this._pathWithToken(where);
      if (!this.options.recover) return path;
      var sep = path.indexOf("?") >= 0 ? "&" : "?";
      return path + sep + "wsbridge_recover=" +
        encodeURIComponent(JSON.stringify(this._positions));
    }

    _baseURL() {
      if (this.options.url) return this.options.url.replace(/\/$/, "");
      return root.location.origin;
    }

    _choose() {
      var allowed = this.options.transports;
      var remembered = this.options.remember && storage() && storage().getItem(STORAGE_KEY);
      if (remembered && allowed.indexOf(remembered) >= 0) return remembered;
      for (var i = 0; i < allowed.length; i++) {
        if (allowed[i] !== "websocket" || typeof root.WebSocket === "function") return allowed[i];
      }
      return allowed[allowed.length - 1];
    }

    _connect() {
      this.readyState = "connecting";
      if (!this.options.token) return this._start(this._choose());
      var bridge = this;
      // A connect token opens one connection: every attempt asks for a fresh one.
      this._fetchToken().then(function () {
        if (!bridge._closedByUser) bridge._start(bridge._choose());
      }, function (error) {
        bridge._lost(1006, "token callback failed: " + error);
      });
    }

    _fetchToken() {
      var bridge = this;
      return Promise.resolve(this.options.token()).then(function (answer) {
        var token = typeof answer === "string" ? answer : answer && answer.token;
        if (typeof token !== "string" || !token) throw new TypeError("no token");
        bridge._token = token;
        bridge._expiresIn = (answer && answer.expires_in) || null;
        return token;
      });
    }

    _pathWithToken(where) {
      var inQuery = where === "body" || this.options.tokenIn === "query";
      if (!this._token || !inQuery) return this.path;
      var glue = this.path.indexOf("?") >= 0 ? "&" : "?";
      return this.path + glue + "access_token=" + encodeURIComponent(this._token);
    }

    _scheduleRefresh() {
      clearTimeout(this._refreshTimer);
      if (!this.options.token || !this._expiresIn) return;
      var bridge = this;
      this._refreshTimer = setTimeout(function () {
        if (bridge.readyState !== "open" || !bridge._current) return;
        bridge._fetchToken().then(function (token) {
          var message = {};
          message[REFRESH_KEY] = token;
          if (bridge._current) bridge._current.send(JSON.stringify(message));
          bridge._scheduleRefresh();
        }, function () {}); // refused: the server closes with 4511 at expiry; we reconnect
      }, this._expiresIn * 1000 * this.options.refreshAt);
    }

    _start(kind) {
      var bridge = this;
      var Transport = kind === "websocket" ? WebSocketTransport : LongPollTransport;
      var transport;
      if (kind === "websocket" && typeof root.WebSocket !== "function") {
        return this._fallback(kind, 1006, "WebSocket is not available");
      }
      transport = new Transport(this, {
        open: function (subprotocol) {
          if (bridge._current !== transport) return;
          bridge._opened(kind, subprotocol);
        },
        message: function (data) {
          if (bridge._current === transport) bridge._message(data);
        },
        close: function (code, reason, opened) {
          if (bridge._current !== transport) return;
          bridge._current = null;
          if (!opened) return bridge._fallback(kind, code, reason);
          if (transport.unsent) bridge._queue = transport.unsent().concat(bridge._queue);
          bridge._lost(code, reason);
        },
      });
      this._current = transport;
    }

    _fallback(kind, code, reason) {
      // A WebSocket that never opened, in a page where none ever worked: try long-poll.
      var allowed = this.options.transports;
      if (kind === "websocket" && !this._wsWorked && allowed.indexOf("longpoll") >= 0) {
        return this._start("longpoll");
      }
      this._lost(code, reason);
    }

    _opened(kind, subprotocol) {
      this.transport = kind;
      this.subprotocol = subprotocol;
      this.readyState = "open";
      this.attempt = 0;
      if (kind === "websocket") this._wsWorked = true;
      var store = this.options.remember && storage();
      if (store) {
        // Remember long-poll for this browser session; forget it once WebSocket works.
        if (kind === "longpoll") store.setItem(STORAGE_KEY, kind);
        else store.removeItem(STORAGE_KEY);
      }
      var queued = this._queue;
      this._queue = [];
      this._scheduleRefresh();
      this.dispatchEvent(makeEvent("open", { transport: kind, subprotocol: subprotocol }));
      var i = 0;
      for (; i < queued.length && this._current; i++) this._current.send(queued[i]);
      if (i < queued.length) this._queue = queued.slice(i).concat(this._queue);
    }

    _message(data) {
      if (typeof data === "string" && data.indexOf('{"' + REFRESHED_KEY + '"') === 0) {
        return this.dispatchEvent(makeEvent("refreshed", { data: data }));
      }
      var stamp = decodeStamp(data), group = null, position = null;
      if (stamp) {
        var wsb = stamp.wsb;
        if ("recovered" in wsb) {
          // Nothing replayed when recovery failed: carry on from the group's position now.
          if (!wsb.recovered && wsb.p) this._positions[wsb.g] = wsb.p;
          this.dispatchEvent(makeEvent("recovery", {
            group: wsb.g, recovered: !!wsb.recovered, position: wsb.p || null, missed: wsb.missed || 0,
          }));
          return;
        }
        group = wsb.g;
        position = wsb.p;
        this._positions[group] = position;
        if ("text" in stamp) data = stamp.text;
        else if ("bytes" in stamp) data = fromBase64(stamp.bytes);
        else return; // the position of a message the consumer sent nothing for
      }
      var wrapped = decodeStream(data);
      var fields = { data: data, stream: null, payload: undefined, group: group, position: position };
      if (wrapped) {
        fields.stream = wrapped.stream;
        fields.payload = wrapped.payload;
        var stream = this._streams.get(wrapped.stream);
        if (stream) stream.dispatchEvent(makeEvent("message", { data: wrapped.payload }));
      }
      fields.json = function () {
        return JSON.parse(data);
      };
      this.dispatchEvent(makeEvent("message", fields));
    }

    _lost(code, reason) {
      clearTimeout(this._refreshTimer);
      if (this._closedByUser) return;
      var again = this.options.reconnect && this.options.shouldReconnect(code) &&
        this.attempt < this.options.maxRetries;
      this.readyState = again ? "connecting" : "closed";
      this.dispatchEvent(makeEvent("close", { code: code, reason: reason, willReconnect: again }));
      if (!again) return;
      // Exponential backoff with full jitter: uniform in [0, min(max, min * 2^attempt)].
      var cap = Math.min(this.options.maxDelay, this.options.minDelay * Math.pow(2, this.attempt));
      var delay = Math.floor(Math.random() * cap);
      this.attempt += 1;
      this.dispatchEvent(makeEvent("reconnecting", { attempt: this.attempt, delay: delay }));
      var bridge = this;
      this._timer = setTimeout(function () {
        if (!bridge._closedByUser) bridge._connect();
      }, delay);
    }
  }

  WSBridge.shouldReconnect = defaultShouldReconnect;
  WSBridge.version = "0.1.0";

  function connect(path, options) {
    return new WSBridge(path, options);
  }

  // A classic script (document.currentScript is set only for those) gets a
  // global; a module hands its exports to the export lines below.
  if (typeof document !== "undefined" && document.currentScript) {
    root.WSBridge = WSBridge;
    root.WSBridge.connect = connect;
  } else {
    root.__wsbridge_exports = { WSBridge: WSBridge, connect: connect };
  }
})(typeof globalThis !== "undefined" ? globalThis : window);

const { WSBridge, connect } = globalThis.__wsbridge_exports; // @classic-strip
delete globalThis.__wsbridge_exports; // @classic-strip
export { WSBridge, connect }; // @classic-strip
export default WSBridge; // @classic-strip
