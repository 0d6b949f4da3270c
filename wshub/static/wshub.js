// wshub.js: the browser client of wshub's WebSocket protocol. An ES module, no build step.
//
//   import { WshubClient } from "/static/wshub.js";
//   const client = new WshubClient("ws://127.0.0.1:8000/ws", { user: "alice" });
//   client.on("message", (m) => console.log(m.channel, m.offset, m.data));
//   client.on("resync", ({ channel }) => refetch(channel));   // recovered: false
//   client.on("state", (s) => banner(s));                     // connecting/open/reconnecting/closed
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

/** `ws://host/ws` from a page's location, for pages served by wshub itself. */
export function defaultUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

export class WshubClient {
  /**
   * @param {string} url  the `/ws` endpoint
   * @param {object} options  token (JWT) or user (open mode); backoffMin/backoffMax (ms);
   *   requestTimeout (ms); heartbeat (s, overrides welcome.heartbeat; 0 turns pings off)
   */
  constructor(url, options = {}) {
    this.options = { backoffMin: 250, backoffMax: 10000, requestTimeout: 10000, ...options };
    const u = new URL(url);
    if (options.token) u.searchParams.set("token", options.token);
    else if (options.user) u.searchParams.set("user", options.user);
    this.url = u.toString();
    this.state = "closed";
    this.welcome = null;
    this.attempt = 0;
    this.reconnects = 0;
    this.channels = new Map(); // name -> { meta, offset, epoch, resuming }
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id -> { resolve, reject, timer }
    this._waiting = []; // requests made while not open: resolved when the link is back
    this._listeners = new Map();
    this._closing = false;
    this._timer = null;
    this._beat = null;
  }

  get user() {
    return this.welcome ? this.welcome.user : null;
  }

  /** Listen to an event; returns a function that stops listening.
   * Events: state, welcome, message, direct, member_joined, member_left, resync, error. */
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

  /** Connect; resolves once the server's welcome has arrived and every channel is joined. */
  connect() {
    this._closing = false;
    this._setState("connecting");
    return new Promise((resolve, reject) => {
      this._open(resolve, reject);
    });
  }

  /** Close for good: no reconnect. */
  close() {
    this._closing = true;
    clearTimeout(this._timer);
    this._stopHeartbeat();
    if (this._ws) this._ws.close(1000);
    this._ws = null;
    this._failPending(new ConnectionLost("client closed"));
    for (const w of this._waiting.splice(0)) w.reject(new ConnectionLost("client closed"));
    this._setState("closed");
  }

  _open(onOpen, onFail) {
    let welcomed = false;
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!welcomed && frame.type === "welcome") {
        welcomed = true;
        this.welcome = frame;
        this._emit("welcome", frame);
        this._startHeartbeat(ws);
        this._rejoin().then(
          () => {
            if (this._ws !== ws) return;
            if (this.attempt > 0) this.reconnects += 1;
            this.attempt = 0;
            this._setState("open");
            for (const w of this._waiting.splice(0)) w.resolve();
            if (onOpen) onOpen(frame);
          },
          () => {}, // the link dropped while rejoining: onclose reconnects
        );
        return;
      }
      this._dispatch(frame);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return; // an old link, already given up
      this._lost(event.code);
      if (!welcomed && onFail && this.reconnects === 0 && this.attempt === 0) {
        // The very first connect failed: report it instead of retrying in the background.
        this._closing = true;
        this._setState("closed");
        onFail(new ConnectionLost(`cannot connect to ${this.url}`));
      } else if (!this._closing) {
        this._scheduleReconnect(onOpen);
      }
    };
  }

  _lost() {
    this._ws = null;
    this._stopHeartbeat();
    this._failPending(new ConnectionLost());
  }

  _scheduleReconnect(onOpen) {
    this._setState("reconnecting");
    const delay = this.backoff(this.attempt);
    this.attempt += 1;
    this._emit("reconnecting", { attempt: this.attempt, delay });
    this._timer = setTimeout(() => this._open(onOpen, null), delay);
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
          if (this._ws !== ws) return;
          ws.onclose = null;
          ws.close();
          this._lost();
          if (!this._closing) this._scheduleReconnect(null);
        },
      );
    };
    this._beat = setTimeout(beat, ms);
  }

  _stopHeartbeat() {
    clearTimeout(this._beat);
    this._beat = null;
  }

  _rejoin() {
    const joins = [];
    for (const [name, ch] of this.channels) {
      const frame = { type: "join", channel: name };
      if (ch.meta !== undefined) frame.meta = ch.meta;
      if (ch.epoch != null && ch.offset != null) {
        frame.since = { offset: ch.offset, epoch: ch.epoch };
        ch.resuming = true;
      }
      joins.push(
        this._request(frame, { wait: false }).catch((err) => {
          if (err instanceof ServerError) this._emit("error", { channel: name, error: err });
          else throw err;
        }),
      );
    }
    return Promise.all(joins);
  }

  _dispatch(frame) {
    switch (frame.type) {
      case "message":
        this._onMessage(frame);
        return;
      case "joined":
        this._onJoined(frame);
        break;
      case "direct":
      case "member_joined":
      case "member_left":
        this._emit(frame.type, frame);
        break;
      default:
        break;
    }
    const pending = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
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
    const last = { offset: ch.offset, epoch: ch.epoch };
    ch.offset = frame.offset;
    ch.epoch = frame.epoch;
    if (resuming) {
      this._emit("resync", {
        channel: frame.channel,
        offset: frame.offset,
        epoch: frame.epoch,
        lastOffset: last.offset,
        lastEpoch: last.epoch,
      });
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
  async _request(frame, { timeout = this.options.requestTimeout, wait = true } = {}) {
    if (wait && this.state !== "open") {
      if (this._closing) throw new ConnectionLost("client closed");
      await new Promise((resolve, reject) => this._waiting.push({ resolve, reject }));
    }
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new ConnectionLost("not connected");
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Error(`no reply to ${frame.type} within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Join a channel; after a reconnect it is joined again from the last position seen. */
  async join(channel, { meta } = {}) {
    let ch = this.channels.get(channel);
    const fresh = !ch;
    if (!ch) {
      ch = { meta, offset: null, epoch: null, resuming: false };
      this.channels.set(channel, ch);
    } else if (meta !== undefined) {
      ch.meta = meta;
    }
    const frame = { type: "join", channel };
    if (ch.meta !== undefined) frame.meta = ch.meta;
    if (ch.offset != null && ch.epoch != null) frame.since = { offset: ch.offset, epoch: ch.epoch };
    try {
      return await this._request(frame);
    } catch (err) {
      if (fresh) this.channels.delete(channel);
      throw err;
    }
  }

  async leave(channel) {
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
