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

/** What the token function is asked for, and why. */
export interface TokenRequest {
  /** "connect": no token yet; "refresh": the current one ends at `expires` (Unix seconds)
   * and the connection stays if a new one comes; "renew": the server closed with 4001 or
   * 4003, or refused the handshake with 401 (`code`, `reason`, `status` say which). */
  cause: "connect" | "refresh" | "renew";
  code?: number;
  reason?: string;
  status?: number;
  expires?: number;
}

/** The application's token function: a JWT, or null (or undefined) when it has none. On
 * "renew" null stops the client; on "refresh" it leaves the connection to end at `expires`. */
export type TokenFunction = (
  why: TokenRequest,
) => string | null | undefined | Promise<string | null | undefined>;

/** The server joined the connection to a channel (the token's `channels`, or the HTTP API). */
export interface Subscribed {
  type: "subscribed";
  channel: string;
  offset: number;
  epoch: string;
}

/** The server took the connection out of a channel: through the HTTP API ("server"), a
 * refreshed token that no longer allows it ("permissions"), or its subscription token's end
 * ("expired"). The client does not join it again after a reconnect. */
export interface Unsubscribed {
  type: "unsubscribed";
  channel: string;
  reason: "server" | "permissions" | "expired";
}

/** A token was replaced without a reconnect: the connection's (no `channel`) or one
 * channel's subscription token; `expires` is its new end, Unix seconds, or null. */
export interface Refreshed {
  channel?: string;
  expires: number | null;
}

export interface ClientEvents {
  state: State;
  welcome: Welcome;
  message: MessageFrame;
  direct: DirectFrame;
  member_joined: MemberEvent;
  member_left: MemberEvent;
  resync: Resync;
  subscribed: Subscribed;
  unsubscribed: Unsubscribed;
  refreshed: Refreshed;
  /** A request without a caller failed: a rejoin, a refresh, a renewal. */
  error: { channel?: string; error: Error };
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
  /** A JWT, or a function that gets one, for a server that checks tokens. It is sent in the
   * `auth` frame, not in the URL (unless `tokenInUrl`). */
  token?: string | TokenFunction;
  /** The user id in open mode (no auth configured). */
  user?: string;
  /** Asked for a token before `expires` (a `refresh`), and after 4001, 4003 or a 401 (then a
   * reconnect; null stops). Defaults to `token` when that is a function. */
  getToken?: TokenFunction;
  /** A subscription token for a channel, asked at each join of it (a reconnect's included)
   * and again before the token's `exp`; null or undefined: join without one. */
  getSubscriptionToken?: (
    channel: string,
  ) => string | null | undefined | Promise<string | null | undefined>;
  /** Send the token as `?token=` at the handshake instead of in an `auth` frame: for servers
   * of protocol version 1 only, since URLs end up in access logs. */
  tokenInUrl?: boolean;
  /** The most, in milliseconds, that a refresh comes before a token's end (default 60000;
   * it is a quarter of the token's remaining life when that is shorter, with jitter). */
  refreshBefore?: number;
  /** Reconnect backoff bounds, in milliseconds (default 250 and 10000). */
  backoffMin?: number;
  backoffMax?: number;
  /** How long a request waits for its reply, in milliseconds (default 10000). */
  requestTimeout?: number;
  /** Seconds between protocol pings; overrides welcome.heartbeat; 0 turns pings off. */
  heartbeat?: number;
  /** The WebSocket constructor, where there is no global one. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** "auto" (default): a WebSocket, and Server-Sent Events (`/sse`, `/sse/frame`) while one
   * cannot be opened; "websocket" only; "sse" only. */
  transport?: "auto" | "websocket" | "sse";
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

/** The claims of a JWT, decoded without verifying it; {} for anything that is not one. */
export function tokenClaims(token: string): { [claim: string]: Json };

/** What the client does after a close with `code` (the protocol's "client does" column). */
export function closeAction(code: number): "stop" | "token" | "reconnect";

export class WshubClient {
  constructor(url: string, options?: ClientOptions);
  /** The endpoint, never with the token in it: safe to show or log. */
  readonly url: string;
  readonly state: State;
  readonly welcome: Welcome | null;
  /** The connection token's end, Unix seconds (from welcome or the last refresh), or null. */
  readonly expires: number | null;
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
  /** Join a channel (with a token from getSubscriptionToken, when it gives one); after a
   * reconnect it is joined again from the last position seen. */
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
