// Types of wshub.js, the client of wshub's WebSocket protocol (docs/protocol.md).
// They need no DOM library: the same declarations serve a browser page and a Node program.

/** Any JSON value: what `data` and `meta` carry. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A channel's position: the last offset seen in one life (epoch) of its history. */
export interface Position {
  offset: number;
  epoch: string;
}

export interface Welcome {
  type: "welcome";
  user: string;
  session: string;
  server: { name: string; version: string };
  heartbeat: number;
  expires?: number | null;
}

export interface MessageFrame {
  type: "message";
  channel: string;
  offset: number;
  epoch: string;
  /** The publisher's user id, or null when published through the HTTP API. */
  from: string | null;
  data: Json;
  /** Server time, milliseconds since the Unix epoch. */
  ts: number;
}

export interface DirectFrame {
  type: "direct";
  from: string;
  data: Json;
  ts: number;
}

export interface MemberEvent {
  type: "member_joined" | "member_left";
  channel: string;
  user: string;
  meta: Json;
}

export interface Joined {
  type: "joined";
  id: number;
  channel: string;
  offset: number;
  epoch: string;
  recovered: boolean;
}

export interface Member {
  user: string;
  meta: Json;
  connections: number;
}

export interface Resync {
  channel: string;
  offset: number;
  epoch: string;
  lastOffset: number | null;
  lastEpoch: string | null;
}

/** Why the client stopped, or why it is asking for a token: a close code of the protocol
 * (a refused handshake is mapped: 401 to 4001, 403 and 400 to 1008), the server's reason,
 * and the HTTP status when the handshake was refused. */
export interface StopInfo {
  code: number;
  reason: string;
  status?: number;
}

export interface Reconnecting {
  attempt: number;
  /** Milliseconds until the next attempt: backoff with jitter, at least Retry-After on 503. */
  delay: number;
  code: number;
  reason?: string;
  status?: number;
}

export type State = "connecting" | "open" | "reconnecting" | "closed";

export interface ClientEvents {
  state: State;
  welcome: Welcome;
  message: MessageFrame;
  direct: DirectFrame;
  member_joined: MemberEvent;
  member_left: MemberEvent;
  resync: Resync;
  error: { channel?: string; error: ServerError };
  reconnecting: Reconnecting;
  stopped: StopInfo;
}

/** The parts of a WHATWG WebSocket that the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface ClientOptions {
  /** A JWT, for a server that checks tokens. */
  token?: string;
  /** The user id in open mode (no auth configured). */
  user?: string;
  /** Asked for a new token when the token expired (4001), was refused at the handshake
   * (401) or did not verify (4003). Return null or undefined to stop instead. */
  getToken?: (why: StopInfo) => string | null | undefined | Promise<string | null | undefined>;
  /** Reconnect backoff bounds, in milliseconds (default 250 and 10000). */
  backoffMin?: number;
  backoffMax?: number;
  /** How long a request waits for its reply, in milliseconds (default 10000). */
  requestTimeout?: number;
  /** Seconds between protocol pings; overrides welcome.heartbeat; 0 turns pings off. */
  heartbeat?: number;
  /** The WebSocket constructor, where there is no global one. */
  WebSocket?: new (url: string) => WebSocketLike;
}

/** A request answered with an `error` frame; `code` is the protocol's error code. */
export class ServerError extends Error {
  constructor(code: string, message: string);
  readonly code: string;
}

/** The link dropped before the reply came: the request may or may not have been served. */
export class ConnectionLost extends Error {
  constructor(message?: string);
}

/** The client gave up for good: a close or refusal that says not to reconnect. */
export class Stopped extends ConnectionLost {
  constructor(info: StopInfo);
  readonly code: number;
  readonly reason: string;
  readonly status?: number;
}

/** `ws://host/ws` from a page's location, for pages served by wshub itself. */
export function defaultUrl(loc?: { protocol: string; host: string }): string;

/** What the client does after a close with `code` (the protocol's "client does" column). */
export function closeAction(code: number): "stop" | "token" | "reconnect";

export class WshubClient {
  constructor(url: string, options?: ClientOptions);
  /** The endpoint, never with the token in it: safe to show or log. */
  readonly url: string;
  readonly state: State;
  readonly welcome: Welcome | null;
  /** Why the client stopped by itself, or null. */
  readonly stopped: StopInfo | null;
  /** The user id the server gave this connection (after welcome). */
  readonly user: string | null;
  /** Reconnects that succeeded since connect(). */
  readonly reconnects: number;
  readonly channels: ReadonlyMap<string, { meta?: Json; offset: number | null; epoch: string | null }>;

  /** Listen to an event; returns a function that stops listening. */
  on<K extends keyof ClientEvents>(type: K, listener: (detail: ClientEvents[K]) => void): () => void;
  /** Resolves once welcomed and every channel is joined; rejects with Stopped on giving up. */
  connect(): Promise<Welcome>;
  /** Close for good: no reconnect. */
  close(): void;
  /** Join a channel; after a reconnect it is joined again from the last position seen. */
  join(channel: string, options?: { meta?: Json }): Promise<Joined>;
  leave(channel: string): Promise<{ type: "left"; id: number; channel: string }>;
  /** Publish; resolves to the message's offset. */
  publish(channel: string, data: Json): Promise<number>;
  /** A direct message to every connection of user `to`. */
  send(to: string, data: Json): Promise<void>;
  presence(channel: string): Promise<Member[]>;
  /** A page of history, oldest first; `since` pages forward from a position. */
  history(
    channel: string,
    options?: { since?: Position; limit?: number },
  ): Promise<{ epoch: string; messages: MessageFrame[] }>;
  ping(): Promise<void>;
  /** The delay before reconnect attempt `attempt`, in milliseconds (with jitter). */
  backoff(attempt: number): number;
}
