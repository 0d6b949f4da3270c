// wshub.js: the client of wshub's WebSocket protocol, for browsers and Node. An ES module (it
// imports wshub-tokens.js, next to it), no build step, no dependency.
//
//   import { WshubClient } from "/static/wshub.js";
//   const client = new WshubClient("ws://127.0.0.1:8000/ws", { user: "alice" });
//   // with auth: { token: async () => (await (await fetch("/wshub/token")).json()).token }
//   client.on("message", (m) => console.log(m.channel, m.offset, m.data));
//   client.on("resync", ({ channel }) => refetch(channel));   // recovered: false
//   client.on("state", (s) => banner(s));                     // connecting/open/reconnecting/closed
//   client.on("stopped", ({ code, reason }) => show(reason)); // gave up: no reconnect
//   await client.connect();
//   await client.join("chat:lobby", { meta: { name: "Alice" } });
//   await client.publish("chat:lobby", { text: "hi" });       // resolves to the offset
//
// It keeps the last offset and epoch seen per joined channel. After a reconnect it joins
// every channel again with that position as `since`, so the server replays what was missed;
// a message at or below the position is dropped, so none is handed out twice. When the
// server answers `recovered: false`, a "resync" event tells the app to refetch (history).
// Browsers cannot see WebSocket pings, so it sends the protocol's `ping` every
// `welcome.heartbeat` seconds and treats a missing `pong` as a dead link.
//
// Identity (docs/security.md, "In the browser"): the token (a string, or a function that
// fetches one) goes in the `auth` first frame, never in the URL, so no access log holds it.
// Before `welcome.expires` / `ack.expires` the client asks the function again and sends
// `refresh`; a subscription token per channel comes from `getSubscriptionToken(channel)` at
// each join and again before its own `exp`. `subscribed` / `unsubscribed` (the server put the
// connection into a channel, or took it out) are events; a subscribed channel delivers its
// messages as a joined one does.
//
// Every close follows the protocol's "client does" column (see `closeAction`). A browser
// cannot read a refused handshake (it sees only 1006), so after a handshake fails the client
// asks the server why with a plain `GET /ws` of the same URL, which answers what the upgrade
// got: 401 is handled as 4001, 403 and 400 as 1008, 503 as 1001 waiting at least its
// Retry-After.

import { Tokens, tokenClaims } from "./wshub-tokens.js";

export { tokenClaims };

/** A request answered with an `error` frame. */
export class ServerError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "ServerError";
    this.code = code;
  }
}

/** The link dropped before the reply came: the request may or may not have been served. */
export class ConnectionLost extends Error {
  constructor(message = "connection lost") {
    super(message);
    this.name = "ConnectionLost";
  }
}

/** The client gave up for good (a close or refusal that says not to reconnect). */
export class Stopped extends ConnectionLost {
  constructor({ code, reason, status }) {
    super(reason ? `stopped (${code}): ${reason}` : `stopped (${code})`);
    this.name = "Stopped";
    this.code = code;
    this.reason = reason;
    this.status = status;
  }
}

/** `ws://host/ws` from a page's location, for pages served by wshub itself. */
export function defaultUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

/** What the client does after a close with `code` (docs/protocol.md, "client does"):
 * "stop" (report it, no reconnect), "token" (ask the application for a new token, then
 * reconnect; stop without one) or "reconnect" (backoff with jitter, then join with since).
 * Codes the protocol does not list: the ones that say the client itself is wrong (1002,
 * 1003, 1007, 1010) stop, since a reconnect would repeat it; any other (1005, 1006, ...)
 * reconnects, as a dropped link does. */
export function closeAction(code) {
  if ([1000, 1002, 1003, 1007, 1008, 1009, 1010].includes(code)) return "stop";
  if (code === 4001 || code === 4003) return "token";
  return "reconnect";
}

// Said when a close carries no reason of its own.
const CLOSE_REASONS = {
  1000: "closed by the server",
  1001: "going away",
  1006: "connection lost",
  1008: "policy violation",
  1009: "frame too large",
  1011: "internal error",
  1012: "service restart",
  4001: "token expired",
  4003: "no valid identity",
  4008: "slow consumer",
};

/** The plain HTTP URL of the same endpoint: where the refusal probe answers. */
function httpUrl(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  return u.toString();
}

export class WshubClient {
  /**
   * @param {string} url  the `/ws` endpoint
   * @param {object} options  token (a JWT, or a function that returns one) or user (open
   *   mode); getToken (async ({cause, code, reason, status, expires}) => a token, or null:
   *   asked before `expires` to refresh, and after 4001/4003/401 to reconnect, when it stops
   *   without one); getSubscriptionToken (async (channel) => a subscription token, or null
   *   for none); tokenInUrl (send the token as `?token=`, for servers of protocol version 1);
   *   refreshBefore (ms, default 60000: the most a refresh comes before `expires`);
   *   backoffMin/backoffMax (ms); requestTimeout (ms); heartbeat (s, overrides
   *   welcome.heartbeat; 0 turns pings off); WebSocket (a constructor, for Node without a
   *   global one, such as the `ws` package's); transport ("auto", the default: a WebSocket,
   *   and Server-Sent Events while one cannot be opened; "websocket"; "sse")
   */
  constructor(url, options = {}) {
    this.options = {
      backoffMin: 250,
      backoffMax: 10000,
      requestTimeout: 10000,
      refreshBefore: 60000,
      ...options,
    };
    const u = new URL(url);
    if (!options.token && options.user) u.searchParams.set("user", options.user);
    /** The endpoint, never with the token in it: safe to show or log. */
    this.url = u.toString();
    this._tokens = new Tokens(this.options, {
      request: (frame, opts) => this._request(frame, opts),
      emit: (type, detail) => this._emit(type, detail),
      report: (error, channel) => {
        if (!(error instanceof ConnectionLost)) this._emit("error", { channel, error });
      },
      isIn: (channel) => this.channels.has(channel),
      isOpen: () => this.state === "open",
      joinFrame: (channel) => this._joinFrame(channel, { ...this.channels.get(channel), offset: null }),
    });
    this.state = "closed";
    this.welcome = null;
    /** Why the client stopped by itself: {code, reason, status?}, or null. */
    this.stopped = null;
    this.attempt = 0;
    this.reconnects = 0;
    this.channels = new Map(); // name -> { meta, offset, epoch, resuming }
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id -> { resolve, reject, timer, keepPosition }
    this._waiting = []; // requests made while not open: resolved when the link is back
    this._listeners = new Map();
    this._closing = false;
    this._connecting = null; // connect()'s { resolve, reject } until the first welcome
    this._everOpen = false;
    this._timer = null;
    this._beat = null;
    this._welcomeTimer = null;
    this._sseFallback = false; // over SSE because a WebSocket could not be opened
  }

  get user() {
    return this.welcome ? this.welcome.user : null;
  }

  /** The connection's current token (never shown by the client), or null. */
  get token() {
    return this._tokens.token;
  }

  /** The connection token's end (Unix seconds, from welcome or the last refresh), or null. */
  get expires() {
    return this._tokens.expires;
  }

  /** Listen to an event; returns a function that stops listening. Events: state, welcome,
   * message, direct, member_joined, member_left, resync, subscribed, unsubscribed, refreshed,
   * error, reconnecting, stopped. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type).delete(fn);
  }

  _emit(type, detail) {
    for (const fn of this._listeners.get(type) || []) {
      try {
        fn(detail);
      } catch (err) {
        console.error(`wshub: a "${type}" listener failed`, err);
      }
    }
  }

  _setState(state) {
    if (state !== this.state) {
      this.state = state;
      this._emit("state", state);
    }
  }

  /** Connect; resolves once the server's welcome has arrived and every channel is joined.
   * Rejects with Stopped when the client gives up first (refused, or the server cannot be
   * reached at all on this first attempt). */
  connect() {
    this._closing = false;
    this.stopped = null;
    this._setState("connecting");
    return new Promise((resolve, reject) => {
      this._connecting = { resolve, reject };
      this._open();
    });
  }

  /** Close for good: no reconnect. */
  close() {
    this._closing = true;
    clearTimeout(this._timer);
    this._tokens.close();
    if (this._ws) this._ws.close(1000);
    this._fail(new ConnectionLost("client closed"));
    this._lost();
    this._setState("closed");
  }

  // --- the link: open it, identify, and hear it close ------------------------------------

  _socketUrl(token) {
    if (!token || !this.options.tokenInUrl) return this.url;
    const u = new URL(this.url);
    u.searchParams.set("token", token);
    return u.toString();
  }

  _sseUrl(token) {
    if (!token) return this.url;
    const u = new URL(this.url);
    u.searchParams.set("token", token);
    return u.toString();
  }

  /** The transport seam: Server-Sent Events when asked, or while a WebSocket that the server
   * would accept cannot be opened (a proxy stripping `Upgrade`); each reconnect after a link
   * that was up tries a WebSocket again. */
  _overSse() {
    const transport = this.options.transport || "auto";
    return transport === "sse" || (transport === "auto" && this._sseFallback);
  }

  async _open() {
    let token;
    try {
      token = await this._tokens.forConnect();
    } catch (err) {
      if (!this._closing) this._stop({ code: 4003, reason: err.message });
      return;
    }
    if (this._closing) return;
    const overSse = this._overSse();
    let Socket = this.options.WebSocket || globalThis.WebSocket;
    if (overSse) {
      // Loaded only when needed: a WebSocket client (and Node) never fetches it.
      try {
        ({ SseLink: Socket } = await import("./sse_link.js"));
      } catch (err) {
        this._stop({ code: 1006, reason: `cannot load sse_link.js: ${err.message}` });
        return;
      }
      if (this._closing) return;
    }
    let opened = false;
    let welcomed = false;
    let authId = null; // the auth frame's id: its welcome carries it, its error says why
    let authError = null;
    let lastError = null; // an error frame just before a close says why
    // A stream has no auth frame: over SSE the token goes in the URL.
    const ws = new Socket(overSse ? this._sseUrl(token) : this._socketUrl(token));
    this._ws = ws;
    ws.onopen = () => {
      opened = true;
      if (token && !this.options.tokenInUrl && !overSse) {
        authId = this._nextId++;
        ws.send(JSON.stringify({ type: "auth", id: authId, token }));
      }
      // A server that upgrades and then says nothing is as dead as one that does not answer.
      this._welcomeTimer = setTimeout(() => {
        if (!welcomed && this._ws === ws) this._abort(ws, "no welcome in time");
      }, this.options.requestTimeout);
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      const answersAuth = authId !== null && frame.id === authId;
      if (!welcomed) {
        // In open mode the welcome comes at once, without the auth frame's id.
        if (frame.type === "welcome" && (answersAuth || frame.id === undefined)) {
          welcomed = true;
          clearTimeout(this._welcomeTimer);
          this._welcomed(ws, frame);
        } else if (frame.type === "error" && answersAuth) authError = frame.message;
        return;
      }
      if (answersAuth) return; // open mode answers the auth frame with bad_request: no matter
      if (frame.type === "error" && frame.id === undefined) lastError = frame.message;
      this._dispatch(frame);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return; // an old link, already given up
      this._lost();
      if (this._closing) return;
      const why = authError || event.reason || lastError || CLOSE_REASONS[event.code] || "";
      if (!opened) this._refused();
      else this._closed(event.code, why);
    };
  }

  /** Give up on a link that is open but dead, and reconnect. */
  _abort(ws, reason) {
    ws.onclose = null;
    ws.close();
    this._lost();
    if (!this._closing) this._scheduleReconnect({ code: 1006, reason });
  }

  _welcomed(ws, frame) {
    this.welcome = frame;
    this._tokens.welcomed(frame.expires);
    this._emit("welcome", frame);
    this._startHeartbeat(ws);
    this._rejoin(ws).then(
      () => {
        if (this._ws !== ws) return;
        if (this._everOpen) this.reconnects += 1;
        this._everOpen = true;
        this.attempt = 0;
        this._setState("open");
        for (const w of this._waiting.splice(0)) w.resolve();
        if (this._connecting) this._connecting.resolve(frame);
        this._connecting = null;
      },
      () => {}, // the link dropped while rejoining: onclose reconnects
    );
  }

  /** A close after the upgrade: do what its code says. */
  _closed(code, reason) {
    this._sseFallback = false; // the next link tries a WebSocket again
    const action = closeAction(code);
    if (action === "stop") this._stop({ code, reason });
    else if (action === "token") this._renewToken(code, reason);
    else this._scheduleReconnect({ code, reason });
  }

  /** The handshake failed: ask the server what the upgrade got, and do what it says. */
  async _refused() {
    const answer = await this._probe();
    if (this._closing) return;
    if (answer === null) {
      // Nothing answers: the server is down or unreachable. Only a first connect gives up,
      // so that a page opened on a wrong address says so instead of spinning.
      if (!this._everOpen) {
        this._stop({ code: 1006, reason: `cannot reach ${new URL(this.url).host}` });
      } else this._scheduleReconnect({ code: 1006, reason: CLOSE_REASONS[1006] });
      return;
    }
    const { status, reason } = answer;
    if (status === 401) this._renewToken(4001, reason, status);
    else if (status === 403 || status === 400) this._stop({ code: 1008, reason, status });
    else if (status === 503) {
      const minDelay = 1000 * Math.max(1, Number(answer.retry_after) || 1);
      this._scheduleReconnect({ code: 1001, reason, status, minDelay });
    } else if (status === 200 && (this.options.transport || "auto") === "auto" && !this._overSse()) {
      // The server would take the upgrade, yet it did not arrive: go on over SSE, at once.
      this._sseFallback = true;
      const reason = "no WebSocket: Server-Sent Events";
      this._scheduleReconnect({ code: 1006, reason, immediate: true });
    } else this._scheduleReconnect({ code: 1006, reason: CLOSE_REASONS[1006] });
  }

  /** `GET /ws` over HTTP: {status, reason, retry_after?}, or null when nothing answers. */
  async _probe() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.options.requestTimeout);
    try {
      const resp = await fetch(httpUrl(this._socketUrl(this.token)), {
        cache: "no-store",
        signal: abort.signal,
      });
      let body = {};
      try {
        body = await resp.json();
      } catch {
        // not wshub's probe (an older server, or a proxy's page): the status is all we know
      }
      return { status: resp.status, reason: body.reason || `HTTP ${resp.status}`, ...body };
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  /** 4001/4003 (or a 401 handshake): a new token from the application, or stop. */
  async _renewToken(code, reason, status) {
    if (!this._tokens.source) {
      this._stop({ code, reason, status });
      return;
    }
    this._setState("reconnecting");
    let token;
    try {
      token = await this._tokens.renew({ code, reason, status });
    } catch (err) {
      this._stop({ code, reason: `${reason}; getToken failed: ${err && err.message}`, status });
      return;
    }
    if (this._closing) return;
    if (!token) {
      this._stop({ code, reason, status });
      return;
    }
    // The first retry with a new token goes at once; if that one is refused too, back off.
    this._scheduleReconnect({ code, reason, status, immediate: this.attempt === 0 });
  }

  /** Give up for good and tell the application why. */
  _stop(why) {
    this._closing = true;
    clearTimeout(this._timer);
    this.stopped = why;
    const err = new Stopped(why);
    if (this._connecting) this._connecting.reject(err);
    this._connecting = null;
    this._fail(err);
    this._setState("closed");
    this._emit("stopped", why);
  }

  _fail(err) {
    this._failPending(err);
    for (const w of this._waiting.splice(0)) w.reject(err);
    if (this._connecting) this._connecting.reject(err);
    this._connecting = null;
  }

  _lost() {
    this._ws = null;
    this._stopHeartbeat();
    clearTimeout(this._welcomeTimer);
    this._tokens.lost();
    this._failPending(new ConnectionLost());
  }

  _scheduleReconnect({ code, reason, status, minDelay = 0, immediate = false }) {
    this._setState("reconnecting");
    const delay = Math.max(minDelay, immediate ? 0 : this.backoff(this.attempt));
    this.attempt += 1;
    this._emit("reconnecting", { attempt: this.attempt, delay, code, reason, status });
    this._timer = setTimeout(() => this._open(), delay);
  }

  /** Exponential backoff with jitter: half of the doubled delay is random, so the clients
   * of a restarted server do not all come back in the same instant. */
  backoff(attempt) {
    const delay = Math.min(this.options.backoffMax, this.options.backoffMin * 2 ** attempt);
    return delay / 2 + Math.random() * (delay / 2);
  }

  _startHeartbeat(ws) {
    this._stopHeartbeat();
    const h = this.options.heartbeat ?? (this.welcome && this.welcome.heartbeat);
    if (!h) return;
    const ms = h * 1000;
    const beat = () => {
      this._request({ type: "ping" }, { timeout: ms, wait: false }).then(
        () => {
          if (this._ws === ws) this._beat = setTimeout(beat, ms);
        },
        () => {
          // No pong in time: the link is dead even if the browser has not noticed.
          if (this._ws === ws) this._abort(ws, "no pong in time");
        },
      );
    };
    this._beat = setTimeout(beat, ms);
  }

  _stopHeartbeat() {
    clearTimeout(this._beat);
    this._beat = null;
  }

  /** Join every channel again from its last position, each with a fresh subscription token.
   * The channels of the token's `channels` claim are not: the server joins those itself
   * (`subscribed`), and a join sent too would only repeat it. */
  _rejoin(ws) {
    const claimed = this._tokens.claimed();
    const joins = [];
    for (const [name, ch] of this.channels) {
      if (claimed.has(name)) continue;
      const frame = this._joinFrame(name, ch);
      if (frame.since) ch.resuming = true;
      joins.push(
        this._tokens
          .forJoin(name, frame)
          .then(() => (this._ws === ws ? this._request(frame, { wait: false }) : null))
          .then(() => this._tokens.joined(name, frame))
          .catch((err) => {
            if (err instanceof ConnectionLost) throw err;
            this._emit("error", { channel: name, error: err });
          }),
      );
    }
    return Promise.all(joins);
  }

  _joinFrame(channel, ch) {
    const frame = { type: "join", channel };
    if (ch.meta !== undefined) frame.meta = ch.meta;
    if (ch.offset != null && ch.epoch != null) frame.since = { offset: ch.offset, epoch: ch.epoch };
    return frame;
  }

  // --- frames from the server ------------------------------------------------------------------

  _dispatch(frame) {
    const pending = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
    switch (frame.type) {
      case "message":
        this._onMessage(frame);
        return;
      case "joined":
        if (!(pending && pending.keepPosition)) this._onJoined(frame);
        break;
      case "subscribed":
        this._onSubscribed(frame);
        break;
      case "unsubscribed": {
        this._tokens.left(frame.channel);
        this.channels.delete(frame.channel); // not joined again after a reconnect
        this._emit("unsubscribed", frame);
        break;
      }
      case "direct":
      case "member_joined":
      case "member_left":
        this._emit(frame.type, frame);
        break;
      default:
        break;
    }
    if (pending) {
      this._pending.delete(frame.id);
      clearTimeout(pending.timer);
      if (frame.type === "error") pending.reject(new ServerError(frame.code, frame.message));
      else pending.resolve(frame);
    } else if (frame.type === "error") {
      this._emit("error", { error: new ServerError(frame.code, frame.message) });
    }
  }

  _onJoined(frame) {
    // Handled before any replayed message that follows it, in the order they arrived.
    const ch = this.channels.get(frame.channel);
    if (!ch) return;
    const resuming = ch.resuming;
    ch.resuming = false;
    if (frame.recovered) return;
    this._resync(ch, frame, resuming);
  }

  /** The server joined this connection to a channel. One the client already had (its token's
   * `channels`, joined again after a reconnect) is no news: only what was missed between is,
   * and the server cannot replay that, so it is a "resync". */
  _onSubscribed(frame) {
    const ch = this.channels.get(frame.channel);
    if (!ch) {
      this.channels.set(frame.channel, { offset: frame.offset, epoch: frame.epoch, resuming: false });
      this._emit("subscribed", frame);
      return;
    }
    const missed = ch.offset != null && (ch.epoch !== frame.epoch || ch.offset < frame.offset);
    this._resync(ch, frame, missed);
  }

  /** Take the server's position for a channel; when messages between the one the client had
   * and it are lost to the client (`missed`), say so with a "resync". */
  _resync(ch, frame, missed) {
    const lastOffset = ch.offset;
    const lastEpoch = ch.epoch;
    ch.offset = frame.offset;
    ch.epoch = frame.epoch;
    if (missed) {
      const { channel, offset, epoch } = frame;
      this._emit("resync", { channel, offset, epoch, lastOffset, lastEpoch });
    }
  }

  _onMessage(frame) {
    const ch = this.channels.get(frame.channel);
    if (!ch) return;
    if (frame.epoch === ch.epoch && ch.offset != null && frame.offset <= ch.offset) return;
    ch.offset = frame.offset;
    ch.epoch = frame.epoch;
    this._emit("message", frame);
  }

  _failPending(err) {
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
  }

  /** Send a frame with a fresh id; resolves to its reply, rejects with ServerError.
   * A request made while reconnecting waits for the link to come back. */
  async _request(frame, { timeout = this.options.requestTimeout, wait = true, keepPosition } = {}) {
    if (wait && this.state !== "open") {
      if (this._closing) {
        throw this.stopped ? new Stopped(this.stopped) : new ConnectionLost("client closed");
      }
      await new Promise((resolve, reject) => this._waiting.push({ resolve, reject }));
    }
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 /* OPEN */) throw new ConnectionLost("not connected");
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Error(`no reply to ${frame.type} within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer, keepPosition });
      ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Join a channel (with a subscription token from getSubscriptionToken, if it gives one);
   * after a reconnect it is joined again from the last position seen. */
  async join(channel, { meta } = {}) {
    let ch = this.channels.get(channel);
    const fresh = !ch;
    if (!ch) {
      ch = { meta, offset: null, epoch: null, resuming: false };
      this.channels.set(channel, ch);
    } else if (meta !== undefined) {
      ch.meta = meta;
    }
    const frame = this._joinFrame(channel, ch);
    try {
      await this._tokens.forJoin(channel, frame);
      const joined = await this._request(frame);
      this._tokens.joined(channel, frame);
      return joined;
    } catch (err) {
      if (fresh) this.channels.delete(channel);
      throw err;
    }
  }

  async leave(channel) {
    this._tokens.left(channel);
    this.channels.delete(channel);
    return this._request({ type: "leave", channel });
  }

  /** Publish; resolves to the message's offset. */
  async publish(channel, data) {
    const ack = await this._request({ type: "publish", channel, data });
    return ack.offset;
  }

  /** A direct message to every connection of user `to`. */
  async send(to, data) {
    await this._request({ type: "send", to, data });
  }

  /** Everyone in a channel: [{user, meta, connections}]. */
  async presence(channel) {
    return (await this._request({ type: "presence", channel })).members;
  }

  /** A page of history: {epoch, messages} (oldest first). `since` is {offset, epoch}. */
  async history(channel, { since, limit = 100 } = {}) {
    const frame = { type: "history", channel, limit };
    if (since) frame.since = since;
    const reply = await this._request(frame);
    return { epoch: reply.epoch, messages: reply.messages };
  }

  async ping() {
    await this._request({ type: "ping" });
  }
}
