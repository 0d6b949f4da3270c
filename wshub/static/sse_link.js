// wshub's protocol over Server-Sent Events, behind the interface of a WebSocket.
//
// `new SseLink("ws://host/ws?user=ann")` behaves, for `WshubClient` (pass it as the
// `WebSocket` option), like the WebSocket it replaces: `onopen`, `onmessage` with each server
// frame's JSON, `onclose` with a close code, `send(frameJson)`, `close()`. Underneath, the
// server's frames come from `GET /sse` (the browser's own EventSource), and the client's go
// as HTTP requests: `publish`, `send`, `presence` and `history` to `POST /sse/frame`; `join`
// and `leave` reopen the stream with the new set of channels and the last event id, so every
// channel already joined resumes where it was (nothing missed, nothing twice), the channels
// the server placed the stream in (`subscribed`) included: the id the reopened stream carries
// names them, so the server joins them again; `ping` is answered here while the stream is
// open (EventSource cannot see the server's heartbeat).

const FORWARDED = new Set(["publish", "send", "presence", "history"]);
const EVENTS = [
  "welcome", "joined", "left", "ack", "message", "direct", "member_joined", "member_left",
  "presence", "history", "pong", "subscribed", "unsubscribed", "error",
];

export class SseLink {
  /** @param {string} url  the `/ws` URL the client would have opened */
  constructor(url) {
    const u = new URL(url);
    u.protocol = u.protocol === "wss:" ? "https:" : "http:";
    u.pathname = u.pathname.replace(/\/ws$/, "/sse");
    this.url = u.toString();
    this.readyState = 0; // CONNECTING, as a WebSocket's
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._identity = new URLSearchParams(u.search); // token or user: for every request
    this._channels = new Map(); // name -> { offset, epoch } once known
    this._placed = new Map(); // the same, for the channels the server joined (`subscribed`)
    this._joining = new Map(); // channel -> id of a join waiting for the reopened stream
    this._reopening = false;
    this._welcomed = false;
    this._lastId = null;
    this._source = null;
    this._open();
  }

  _streamUrl() {
    const u = new URL(this.url);
    u.search = this._identity.toString();
    for (const channel of this._channels.keys()) u.searchParams.append("channel", channel);
    const resume = this._resumeId();
    if (resume) u.searchParams.set("last_event_id", resume);
    return u.toString();
  }

  /** The last event id, naming only the channels the stream is still to have: a channel
   * left (or taken away by the server) is not joined again. */
  _resumeId() {
    if (this._lastId === null) return "";
    const parts = this._lastId.split("~");
    const kept = [];
    for (let i = 0; i + 2 < parts.length; i += 3) {
      if (this._channels.has(parts[i]) || this._placed.has(parts[i])) {
        kept.push(parts.slice(i, i + 3).join("~"));
      }
    }
    return kept.join("~");
  }

  _open() {
    const source = new EventSource(this._streamUrl());
    this._source = source;
    let opened = false;
    source.onopen = () => {
      opened = true;
    };
    for (const type of EVENTS) {
      source.addEventListener(type, (event) => {
        if (this._source === source) this._event(type, event);
      });
    }
    source.onerror = () => {
      if (this._source !== source) return;
      // EventSource would reconnect by itself; the client has its own policy (backoff, the
      // refusal probe, rejoin with since), so the link ends here as a WebSocket would.
      source.close();
      this._end(1006, opened ? "stream lost" : "");
    };
  }

  _event(type, event) {
    if (event.lastEventId) this._lastId = event.lastEventId;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    const position = { offset: frame.offset, epoch: frame.epoch };
    if (type === "joined" || type === "message") {
      if (this._channels.has(frame.channel)) this._channels.set(frame.channel, position);
      else if (this._placed.has(frame.channel)) this._placed.set(frame.channel, position);
    }
    if (type === "subscribed") {
      const known = this._channels.has(frame.channel) || this._placed.has(frame.channel);
      if (!this._channels.has(frame.channel)) this._placed.set(frame.channel, position);
      if (known) return; // a token's channel, placed again on a reopen: the client knows it
    } else if (type === "unsubscribed") {
      this._channels.delete(frame.channel); // a reopened stream must not ask for it again
      this._placed.delete(frame.channel);
    }
    if (type === "welcome") {
      if (this._welcomed) return; // a reopened stream greets again: the client knows it
      this._welcomed = true;
      this.readyState = 1;
      if (this.onopen) this.onopen({});
    } else if (type === "joined") {
      if (!this._joining.has(frame.channel)) return; // an old channel, rejoined on a reopen
      const id = this._joining.get(frame.channel);
      this._joining.delete(frame.channel);
      if (id !== undefined) frame.id = id;
      else delete frame.id;
    }
    this._deliver(frame);
  }

  _deliver(frame) {
    if (this.readyState === 1 && this.onmessage) this.onmessage({ data: JSON.stringify(frame) });
  }

  _reply(request, frame) {
    if (request.id !== undefined) frame.id = request.id;
    queueMicrotask(() => this._deliver(frame));
  }

  /** A client frame, as the client sends it on a WebSocket. */
  send(text) {
    if (this.readyState !== 1) return;
    const frame = JSON.parse(text);
    if (FORWARDED.has(frame.type)) this._post(text, frame);
    else if (frame.type === "ping") this._reply(frame, { type: "pong" });
    else if (frame.type === "join") this._join(frame);
    else if (frame.type === "leave") this._leave(frame);
    else {
      const message = `${frame.type} is not served over Server-Sent Events`;
      this._reply(frame, { type: "error", code: "unknown_type", message });
    }
  }

  _join(frame) {
    const known = this._channels.get(frame.channel) || this._placed.get(frame.channel);
    if (known) {
      const { offset = 0, epoch = "" } = known;
      const joined = { type: "joined", channel: frame.channel, offset, epoch, recovered: true };
      this._reply(frame, joined);
      return;
    }
    // The new channel resumes from the client's own position, the others from the stream's.
    const since = frame.since ? `${frame.channel}~${frame.since.offset}~${frame.since.epoch}` : "";
    this._lastId = [this._lastId, since].filter(Boolean).join("~") || null;
    this._channels.set(frame.channel, {});
    this._joining.set(frame.channel, frame.id);
    this._reopen();
  }

  _leave(frame) {
    const had = this._channels.delete(frame.channel);
    if (!this._placed.delete(frame.channel) && !had) {
      const message = `not joined to ${frame.channel}`;
      this._reply(frame, { type: "error", code: "not_joined", message });
      return;
    }
    this._reopen();
    this._reply(frame, { type: "left", channel: frame.channel });
  }

  /** Reopen the stream once for all the joins and leaves of this moment (a rejoin sends
   * every channel's join at once). */
  _reopen() {
    if (this._reopening) return;
    this._reopening = true;
    queueMicrotask(() => {
      this._reopening = false;
      if (this.readyState !== 1) return;
      if (this._source) this._source.close();
      this._open();
    });
  }

  async _post(text, frame) {
    const u = new URL(this.url);
    u.pathname = u.pathname.replace(/\/sse$/, "/sse/frame");
    u.search = this._identity.toString();
    try {
      const resp = await fetch(u, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: text,
      });
      this._deliver(await resp.json());
    } catch {
      this._reply(frame, { type: "error", code: "unavailable", message: "request failed" });
    }
  }

  close(code = 1000, reason = "") {
    if (this._source) this._source.close();
    this._source = null;
    queueMicrotask(() => this._end(code, reason));
  }

  _end(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }
}
