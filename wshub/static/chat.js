// The chat page: rooms, live members, messages and direct messages on wshub.js.
import { WshubClient, defaultUrl } from "/static/wshub.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const serverUrl = params.get("server") || defaultUrl();
// ?token_url=PATH: where the page gets its tokens (JSON {"token": ...}), as from an app's
// backend behind the same origin. Only a path of this origin: a link must not be able to
// sign the visitor in as someone else.
const tokenUrl = params.get("token_url");

let client = null;
let active = null; // the conversation on screen: "chat:lobby" or "@bob"
const conversations = new Map(); // key -> { kind, items: [], seen: Set, unread, members: Map }
const epochs = new Map(); // epoch -> order of first sight, to sort messages across a reset

function conversation(key) {
  let c = conversations.get(key);
  if (!c) {
    c = { kind: key.startsWith("@") ? "dm" : "room", items: [], seen: new Set(), unread: 0, members: new Map() };
    conversations.set(key, c);
  }
  return c;
}

function roomChannel(name) {
  return name.includes(":") ? name : `chat:${name}`;
}

function text(data) {
  if (data && typeof data === "object" && typeof data.text === "string") return data.text;
  return typeof data === "string" ? data : JSON.stringify(data);
}

function displayName(room, user) {
  const meta = room && room.members.get(user);
  return (meta && meta.name) || user || "server";
}

// --- messages: each once, in order ----------------------------------------------------------

function epochRank(epoch) {
  if (!epochs.has(epoch)) epochs.set(epoch, epochs.size);
  return epochs.get(epoch);
}

/** Add a channel message unless it is already shown (by epoch and offset), in offset order. */
function addMessage(frame) {
  const c = conversation(frame.channel);
  const key = `${frame.epoch}:${frame.offset}`;
  if (c.seen.has(key)) return;
  c.seen.add(key);
  const item = { kind: "message", rank: epochRank(frame.epoch), offset: frame.offset, frame };
  let i = c.items.length;
  while (i > 0 && c.items[i - 1].kind === "message" && after(c.items[i - 1], item)) i--;
  c.items.splice(i, 0, item);
  if (frame.channel === active) render();
  else {
    c.unread += 1;
    renderRooms();
  }
}

function after(a, b) {
  return a.rank > b.rank || (a.rank === b.rank && a.offset > b.offset);
}

function addNote(key, note) {
  conversation(key).items.push({ kind: "note", text: note });
  if (key === active) render();
}

function addDirect(peer, from, data, ts) {
  const c = conversation(`@${peer}`);
  c.items.push({ kind: "direct", from, data, ts });
  if (`@${peer}` === active) render();
  else {
    c.unread += 1;
    renderRooms();
  }
}

async function loadHistory(channel) {
  const { messages } = await client.history(channel, { limit: 100 });
  for (const m of messages) addMessage(m);
}

async function loadMembers(channel) {
  const members = await client.presence(channel);
  const c = conversation(channel);
  c.members = new Map(members.map((m) => [m.user, m.meta || {}]));
  if (channel === active) renderMembers();
}

// --- rendering ---------------------------------------------------------------------------------

function render() {
  const c = conversations.get(active);
  const dm = active && active.startsWith("@");
  $("title").textContent = active ? (dm ? `Direct: ${active.slice(1)}` : `# ${active.replace(/^chat:/, "")}`) : "";
  // Where a message goes, said where it is typed: a private one must not be mistaken.
  $("text").placeholder = !active ? "" : dm ? `Private message to ${active.slice(1)}` : `Message #${active.replace(/^chat:/, "")}`;
  const list = $("messages");
  list.replaceChildren();
  if (!c) return;
  c.unread = 0;
  for (const item of c.items) {
    const li = document.createElement("li");
    if (item.kind === "note") {
      li.className = "note";
      li.textContent = item.text;
    } else {
      const from = item.kind === "message" ? item.frame.from : item.from;
      const data = item.kind === "message" ? item.frame.data : item.data;
      const ts = item.kind === "message" ? item.frame.ts : item.ts;
      li.className = from === client.user ? "msg mine" : "msg";
      if (item.kind === "message") li.dataset.offset = item.offset;
      const who = document.createElement("span");
      who.className = "from";
      who.textContent = item.kind === "message" ? displayName(c, from) : from;
      const when = document.createElement("time");
      when.textContent = new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      const body = document.createElement("span");
      body.className = "text";
      body.textContent = text(data);
      li.append(who, when, body);
    }
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;
  renderRooms();
  renderMembers();
}

function renderRooms() {
  for (const [listId, kind] of [["rooms", "room"], ["dms", "dm"]]) {
    const ul = $(listId);
    ul.replaceChildren();
    for (const [key, c] of conversations) {
      if (c.kind !== kind) continue;
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.className = key === active ? "active" : "";
      button.dataset.key = key;
      button.textContent = kind === "room" ? `# ${key.replace(/^chat:/, "")}` : key.slice(1);
      if (c.unread) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = c.unread;
        button.append(badge);
      }
      button.onclick = () => show(key);
      li.append(button);
      ul.append(li);
    }
  }
}

function renderMembers() {
  const ul = $("members");
  ul.replaceChildren();
  const c = conversations.get(active);
  const members = c && c.kind === "room" ? [...c.members.keys()].sort() : [];
  $("member-count").textContent = members.length ? members.length : "";
  $("member-count").hidden = !members.length;
  for (const user of members) {
    const li = document.createElement("li");
    li.dataset.user = user;
    if (user === client.user) {
      const name = document.createElement("span");
      name.textContent = `${displayName(c, user)} (you)`;
      li.append(name);
    } else {
      // The name itself opens the private conversation.
      const name = document.createElement("button");
      name.className = "member";
      name.textContent = displayName(c, user);
      name.title = `Private message to ${user}`;
      name.onclick = () => show(`@${user}`, true);
      li.append(name);
    }
    ul.append(li);
  }
}

function show(key, create = false) {
  if (create) conversation(key);
  active = key;
  render();
  $("text").focus();
}

// --- actions -------------------------------------------------------------------------------------

async function joinRoom(name) {
  const channel = roomChannel(name);
  try {
    await client.join(channel, { meta: { name: client.user } });
  } catch (err) {
    // Nothing joined yet: the page has no room to show, and says so.
    if (!active) setProblem(`Cannot join #${name}: ${err.message}`);
    throw err;
  }
  setProblem(null);
  conversation(channel);
  show(channel);
  await Promise.all([loadHistory(channel), loadMembers(channel)]);
}

async function sendText(value) {
  if (active.startsWith("@")) {
    const to = active.slice(1);
    await client.send(to, { text: value });
    if (to !== client.user) addDirect(to, client.user, { text: value }, Date.now());
  } else {
    await client.publish(active, { text: value });
  }
}

let problem = null; // what stops the page from working, shown until it is solved

function setStatus(state) {
  // The dot is green only when the connection is open and nothing is wrong.
  $("status").className = `dot ${problem ? "error" : state}`;
  $("status").title = problem ? "error" : state;
  $("banner").hidden = state !== "reconnecting";
  document.body.dataset.state = state;
}

function setProblem(message) {
  problem = message;
  $("alert").textContent = message || "";
  $("alert").hidden = !message;
  setStatus(client ? client.state : "closed");
}

/** A token from ?token_url, for the first connect and each refresh and renewal. */
async function fetchToken() {
  const url = new URL(tokenUrl, location.href);
  if (url.origin !== location.origin) throw new Error("token_url must be a path of this site");
  const resp = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (resp.status === 401 || resp.status === 403) return null; // signed out: stop
  if (!resp.ok) throw new Error(`token_url answered ${resp.status}`);
  return (await resp.json()).token;
}

/** A pasted token: used to connect; no refresh (nobody to ask in advance); after it ended
 * or was refused, the page asks for a new one in place. */
function pastedToken(first) {
  return (why) => {
    if (why.cause === "connect") return first;
    return why.cause === "refresh" ? null : askForToken(why);
  };
}

/** The page's token callback: the token expired or was refused; ask for a new one. */
function askForToken({ reason }) {
  // Not signed in yet: the sign-in form shows the reason and takes the next token.
  if (!$("login").hidden) return null;
  $("renew-reason").textContent = `${reason}: paste a new token to reconnect.`;
  $("renew").hidden = false;
  $("renew-token").value = "";
  $("renew-token").focus();
  return new Promise((resolve) => {
    $("renew").onsubmit = (event) => {
      event.preventDefault();
      $("renew").hidden = true;
      resolve(event.submitter && event.submitter.id === "renew-stop" ? null : $("renew-token").value.trim());
    };
  });
}

async function start(name, token) {
  let options = { user: name || undefined }; // open mode
  if (tokenUrl) options = { token: fetchToken };
  else if (token) options = { token: pastedToken(token) };
  // ?transport=sse: Server-Sent Events even where a WebSocket would open (to try it out).
  if (params.get("transport")) options.transport = params.get("transport");
  client = new WshubClient(serverUrl, options);
  client.on("state", setStatus);
  // The client gave up (removed by the server, refused, ...): say why, never with the token.
  // Before sign-in the sign-in form shows it instead.
  client.on("stopped", ({ code, reason }) => {
    if ($("login").hidden) setProblem(`Disconnected: ${reason || "closed"} (code ${code}). Reload the page to connect again.`);
  });
  client.on("message", addMessage);
  // The server put us into a room (the token's channels, or the backend) or took us out.
  client.on("subscribed", ({ channel }) => {
    conversation(channel);
    renderRooms();
    Promise.all([loadHistory(channel), loadMembers(channel)]).catch(console.error);
  });
  client.on("unsubscribed", ({ channel, reason }) => {
    const why = { server: "by the server", permissions: "your token no longer allows it", expired: "your access ended" };
    addNote(channel, `You are no longer in this room: ${why[reason] || reason}.`);
  });
  client.on("direct", (d) => addDirect(d.from, d.from, d.data, d.ts));
  client.on("member_joined", (e) => {
    conversation(e.channel).members.set(e.user, e.meta || {});
    if (e.channel === active) renderMembers();
  });
  client.on("member_left", (e) => {
    conversation(e.channel).members.delete(e.user);
    if (e.channel === active) renderMembers();
  });
  client.on("resync", ({ channel }) => {
    // The server could not replay what we missed (its history was lost or expired):
    // fetch what it has now; messages already on screen are not shown twice.
    addNote(channel, "Some messages could not be recovered; showing the latest history.");
    loadHistory(channel).catch(console.error);
  });
  client.on("state", (state) => {
    if (state !== "open" || !client.reconnects) return;
    // Member events sent while we were away are gone: ask again.
    for (const [key, c] of conversations) if (c.kind === "room") loadMembers(key).catch(console.error);
  });
  await client.connect();
  $("me").textContent = client.user;
  $("login").hidden = true;
  $("app").hidden = false;
  if (name) localStorage.setItem("wshub.name", name);
  await joinRoom(params.get("room") || "lobby").catch(console.warn); // shown by joinRoom
}

$("name").value = params.get("user") || localStorage.getItem("wshub.name") || "";
// With a token URL the page signs in by itself: nothing to type.
for (const id of ["name-field", "token-field", "or"]) $(id).hidden = Boolean(tokenUrl);
$("login-form").onsubmit = async (event) => {
  event.preventDefault();
  $("login-error").hidden = true;
  try {
    await start($("name").value.trim(), $("token").value.trim());
  } catch (err) {
    $("login-error").textContent = `Could not connect: ${err.message}`;
    $("login-error").hidden = false;
  }
};
$("join-form").onsubmit = (event) => {
  event.preventDefault();
  joinRoom($("room-input").value.trim()).catch((err) => active && addNote(active, `Join failed: ${err.message}`));
  $("room-input").value = "";
};
$("composer").onsubmit = (event) => {
  event.preventDefault();
  const value = $("text").value;
  if (!value.trim() || !active) return;
  $("text").value = "";
  sendText(value).catch((err) => addNote(active, `Not sent (${err.message}): ${value}`));
};
if (params.get("autoconnect") === "1") $("login-form").requestSubmit();
