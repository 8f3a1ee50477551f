// Type declarations for wsbridge.js (the browser client of wsbridge).
// See docs/topics/browser-client.rst for the guide, docs/topics/protocol.rst for the wire format.

export type TransportKind = "websocket" | "longpoll";
export type ReadyState = "connecting" | "open" | "closed";
export type OutgoingData = string | ArrayBuffer | ArrayBufferView;

export interface WSBridgeOptions {
  /** Transports to try, in order. Default `["websocket", "longpoll"]`. */
  transports?: TransportKind[];
  /** Where wsbridge's endpoints live. Default `"/_wsbridge"`. */
  prefix?: string;
  /** Server origin (`"https://example.com"`). Default: the page's origin. */
  url?: string | null;
  /** Subprotocols offered to the consumer. */
  protocols?: string[];
  /** Reconnect after a lost connection. Default true. */
  reconnect?: boolean;
  /** Backoff base, ms: delay = random(0, min(maxDelay, minDelay * 2^attempt)). Default 500. */
  minDelay?: number;
  /** Backoff cap, ms. Default 30000. */
  maxDelay?: number;
  /** Reconnection attempts before giving up. Default Infinity. */
  maxRetries?: number;
  /** Messages kept while disconnected; `send()` returns false beyond. Default 256. */
  queueSize?: number;
  /** ms a WebSocket may take to open before it counts as blocked. Default 5000. */
  connectTimeout?: number;
  /** Remember a long-poll fallback in sessionStorage. Default true. */
  remember?: boolean;
  /** fetch() credentials mode for long-poll. Default `"same-origin"`. */
  credentials?: RequestCredentials;
  /** Whether to reconnect after the server closed with `code`. Default: {@link WSBridge.shouldReconnect}. */
  shouldReconnect?: (code: number) => boolean;
  /**
   * Connect tokens, for clients without cookies (docs/topics/identity.rst): returns (a
   * Promise of) a token or `{token, expires_in}`. Called before every connection attempt
   * (a token opens one connection) and, with `expires_in`, again after `refreshAt` of it:
   * the new token is sent over the open connection, which stays open. Default null.
   */
  token?: (() => string | TokenAnswer | Promise<string | TokenAnswer>) | null;
  /** Where the token goes on a WebSocket: `"protocol"` (default) or `"query"` (logged by proxies). */
  tokenIn?: "protocol" | "query";
  /** Fraction of `expires_in` after which the token is refreshed. Default 0.8. */
  refreshAt?: number;
  /**
   * Send the last position seen per history group when (re)connecting, so the
   * server replays what was missed (docs/topics/recovery.rst). Default true.
   */
  recover?: boolean;
}

export interface TokenAnswer {
  token: string;
  /** Seconds the token lives (the Django token view answers it). */
  expires_in?: number;
}

export interface OpenEvent extends Event {
  readonly transport: TransportKind;
  readonly subprotocol: string | null;
}

export interface CloseEvent extends Event {
  readonly code: number;
  readonly reason: string;
  /** True when the client will reconnect (a "reconnecting" event follows). */
  readonly willReconnect: boolean;
}

export interface ReconnectingEvent extends Event {
  readonly attempt: number;
  /** ms until the next attempt. */
  readonly delay: number;
}

export interface MessageEvent extends Event {
  /** A string for text messages, an ArrayBuffer for binary ones. */
  readonly data: string | ArrayBuffer;
  /** The stream name when the message is `{"stream", "payload"}`, else null. */
  readonly stream: string | null;
  /** The stream payload (when `stream` is set). */
  readonly payload: unknown;
  /** The history group of the message the server was handling, or null. */
  readonly group: string | null;
  /** Its position, `"epoch:offset"`, or null. */
  readonly position: string | null;
  /** `JSON.parse(data)`. */
  json<T = unknown>(): T;
}

export interface RecoveryEvent extends Event {
  readonly group: string;
  /** False: what was missed could not be replayed; reload the page's state. */
  readonly recovered: boolean;
  readonly position: string | null;
  /** How many missed messages follow. */
  readonly missed: number;
}

export interface StreamMessageEvent extends Event {
  /** The stream payload, already decoded. */
  readonly data: unknown;
}

export interface WSBridgeEventMap {
  open: OpenEvent;
  close: CloseEvent;
  reconnecting: ReconnectingEvent;
  message: MessageEvent;
  recovery: RecoveryEvent;
}

export interface Stream extends EventTarget {
  readonly name: string;
  /** Send `{"stream": name, "payload": payload}` as a text message. */
  send(payload: unknown): boolean;
  on(type: "message", listener: (event: StreamMessageEvent) => void): () => void;
}

export declare class WSBridge extends EventTarget {
  constructor(path: string, options?: WSBridgeOptions);
  readonly path: string;
  readonly options: Required<WSBridgeOptions>;
  /** The transport in use (null until the first open). */
  readonly transport: TransportKind | null;
  readonly readyState: ReadyState;
  readonly subprotocol: string | null;
  /** Reconnection attempts since the last open. */
  readonly attempt: number;
  /** Send now, or queue while disconnected; false when dropped (queue full, or closed). */
  send(data: OutgoingData): boolean;
  sendJSON(value: unknown): boolean;
  /** The last position seen per history group, sent on reconnect. */
  positions(): Record<string, string>;
  /** The named stream over this connection (created on first use). */
  stream(name: string): Stream;
  on<K extends keyof WSBridgeEventMap>(
    type: K,
    listener: (event: WSBridgeEventMap[K]) => void,
  ): () => void;
  /** Close for good: no reconnection. */
  close(code?: number, reason?: string): void;
  /** The default reconnection rule: not after 1000, 1008, 1009 or 4000-4499. */
  static shouldReconnect(code: number): boolean;
  static readonly version: string;
}

export declare function connect(path: string, options?: WSBridgeOptions): WSBridge;
export default WSBridge;

declare global {
  interface Window {
    /** Defined when wsbridge.js is loaded by a classic script tag. */
    WSBridge?: typeof WSBridge & { connect: typeof connect };
  }
}
