// wshub-tokens.js: the tokens of a wshub.js client (docs/clients.md, "Tokens"). Part of the
// wshub package, imported by wshub.js; an ES module, no build step, no dependency.
//
// The connection's token is a string or comes from the application's function, asked to
// connect, to `refresh` before `expires`, and to renew after a 4001/4003/401. Each channel's
// subscription token comes from getSubscriptionToken(channel) at each join, and again before
// its own `exp`: the client joins again with it, so the server never takes the channel back.

/** The claims of a JWT, read without verifying it (the server does that): {} for anything
 * that is not a JWT. The client reads only `exp` and `channels`, to know when to refresh
 * and which channels the server joins by itself. */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : {};
  } catch {
    return {};
  }
}

/** When to replace a token that ends at `exp` (Unix seconds), in ms from now: a quarter of
 * what is left before it, at most `most` ms, drawn from its upper half so that many clients
 * do not all come in the same second. Measured on this device's clock. */
export function renewalDelay(exp, most) {
  const left = exp * 1000 - Date.now();
  const lead = Math.min(left / 4, most);
  return Math.max(0, left - lead / 2 - (Math.random() * lead) / 2);
}

/** One token kept fresh: shortly before it ends, `renew(exp)` gets and uses a new one and
 * resolves to when that one ends; then again before that. One that brings no later end (or
 * none) stops it: a token ending no later would be replaced at once, again and again. */
class Renewal {
  constructor(renew, most) {
    this._renew = renew;
    this._most = most;
    this._timer = null;
    this._generation = 0; // a renewal under way when stopped must not schedule the next
  }

  at(exp) {
    this.stop();
    if (typeof exp !== "number") return;
    const generation = this._generation;
    this._timer = setTimeout(async () => {
      const next = await this._renew(exp);
      if (generation === this._generation && typeof next === "number" && next > exp) this.at(next);
    }, renewalDelay(exp, this._most));
  }

  stop() {
    clearTimeout(this._timer);
    this._generation += 1;
  }
}

export class Tokens {
  /**
   * @param {object} options  the client's: token, getToken, getSubscriptionToken,
   *   refreshBefore, user
   * @param {object} link  what the tokens need of the client: request(frame, options),
   *   emit(type, detail), report(error, channel?) (a failure no request waits for),
   *   isIn(channel), joinFrame(channel) (a join without `since`), isOpen()
   */
  constructor(options, link) {
    this._options = options;
    this._link = link;
    /** The connection's current token, or null. */
    this.token = typeof options.token === "string" && options.token ? options.token : null;
    /** Its end (Unix seconds, from welcome or the last refresh), or null. */
    this.expires = null;
    this._refresh = new Renewal((expires) => this._refreshNow(expires), options.refreshBefore);
    this._channels = new Map(); // channel -> Renewal of its subscription token
  }

  /** The application's token function: getToken, or the token option when it is one. */
  get source() {
    const { getToken, token } = this._options;
    return getToken || (typeof token === "function" ? token : null);
  }

  /** The token to open with: the current one, else (unless a user of open mode is given) one
   * from the token function. null: none (open mode). Throws, saying why, when the function
   * has none or fails: the client stops. */
  async forConnect() {
    if (this.token || !this.source || this._options.user) return this.token;
    let token;
    try {
      token = await this.source({ cause: "connect" });
    } catch (err) {
      throw new Error(`getToken failed: ${err && err.message}`);
    }
    if (!token) throw new Error("no token");
    this.token = token;
    return token;
  }

  /** After 4001/4003/401: a new token from the function, or null (none, or no function).
   * Throws when the function fails. */
  async renew(why) {
    const source = this.source;
    const token = source ? await source({ cause: "renew", ...why }) : null;
    if (token) this.token = token;
    return token || null;
  }

  /** The server's welcome: refresh before its `expires` (when there is a function to ask). */
  welcomed(expires) {
    this.expires = expires ?? null;
    this._refresh.at(this.source ? this.expires : null);
  }

  /** The link is gone: nothing to refresh on it (the next welcome starts again). */
  lost() {
    this._refresh.stop();
  }

  close() {
    this._refresh.stop();
    for (const renewal of this._channels.values()) renewal.stop();
    this._channels.clear();
  }

  /** The channels the current token's `channels` claim has the server join by itself. */
  claimed() {
    return new Set(this.token ? tokenClaims(this.token).channels || [] : []);
  }

  /** A new token from the function, sent as `refresh`: the connection stays. Without one
   * (null, the function failed, the server refused it) nothing changes: the server closes
   * with 4001 at `expires`, and the function is asked again to reconnect. */
  async _refreshNow(expires) {
    try {
      const token = await this.source({ cause: "refresh", expires });
      if (!token) return undefined;
      const ack = await this._link.request({ type: "refresh", token }, { wait: false });
      this.token = token;
      this.expires = ack.expires ?? null;
    } catch (err) {
      this._link.report(err);
      return undefined;
    }
    this._link.emit("refreshed", { expires: this.expires });
    return this.expires;
  }

  /** Put a subscription token from the application into a join frame (none: no token). */
  async forJoin(channel, frame) {
    const get = this._options.getSubscriptionToken;
    const token = get ? await get(channel) : null;
    if (token) frame.token = token;
    return frame;
  }

  /** A join of `channel` was answered: renew its subscription token (if any) before `exp`. */
  joined(channel, frame) {
    this.left(channel);
    const exp = frame.token ? tokenClaims(frame.token).exp : undefined;
    if (typeof exp !== "number") return;
    const renewal = new Renewal(() => this._renewJoin(channel), this._options.refreshBefore);
    this._channels.set(channel, renewal);
    renewal.at(exp);
  }

  left(channel) {
    const renewal = this._channels.get(channel);
    if (renewal) renewal.stop();
    this._channels.delete(channel);
  }

  /** Join again with a fresh subscription token: answered `joined`, the channel stays. */
  async _renewJoin(channel) {
    const link = this._link;
    if (!link.isIn(channel) || !link.isOpen()) return undefined; // a rejoin renews it
    let frame;
    try {
      frame = await this.forJoin(channel, link.joinFrame(channel));
      if (!frame.token) return undefined; // none: the server ends the channel at exp
      await link.request(frame, { wait: false, keepPosition: true });
    } catch (err) {
      link.report(err, channel);
      return undefined;
    }
    if (!link.isIn(channel)) {
      // Taken out (and the application told) while the renewal was on its way: stay out.
      link.request({ type: "leave", channel }, { wait: false }).catch(() => {});
      return undefined;
    }
    const exp = tokenClaims(frame.token).exp;
    link.emit("refreshed", { channel, expires: exp ?? null });
    return exp;
  }
}
