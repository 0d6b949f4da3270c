// Renders /asyncapi.json: operations, then every message with its fields.
const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

const doc = await (await fetch("/asyncapi.json")).json();
const resolve = (ref) => ref.replace(/^#\//, "").split("/").reduce((node, key) => node[key], doc);
const messageOf = (ref) => {
  let message = resolve(ref.$ref);
  while (message.$ref) message = resolve(message.$ref);
  return message;
};
const anchor = (message) => `msg-${message.payload.$ref.split("/").at(-1)}`;

$("title").textContent = `${doc.info.title} ${doc.info.version}`;
$("description").textContent = doc.info.description;
const server = Object.values(doc.servers)[0];
$("endpoint").textContent = `${server.protocol}://${server.host}${doc.channels.ws.address}`;

const link = (message) => el("a", { href: `#${anchor(message)}` }, el("code", {}, message.name));

// Channel routes: every channel but the protocol's own, with its parameters and payload.
for (const [key, channel] of Object.entries(doc.channels)) {
  if (key === "ws") continue;
  $("routes").hidden = false;
  const message = messageOf(Object.values(channel.messages)[0]);
  const card = el("div", { className: "tile channel", id: `channel-${key}` });
  card.append(el("h3", {}, el("code", {}, channel.address), " ", link(message)));
  card.append(el("div", { className: "muted" }, channel.description.split("\n\n")[0]));
  for (const [name, p] of Object.entries(channel.parameters || {})) {
    const values = p.enum ? ` (one of ${p.enum.join(", ")})` : "";
    card.append(el("div", {}, el("code", {}, `{${name}}`), ` ${p.description.replace(/^`[^`]*`: /, "")}${values}`));
  }
  $("channels").append(card);
}

for (const [id, op] of Object.entries(doc.operations)) {
  const messages = op.messages.map(messageOf);
  const card = el("div", { className: `tile op ${op.action}` });
  card.append(el("h3", {}, el("span", { className: `tag ${op.action}` }, op.action === "receive" ? "client sends" : "server pushes"), ...messages.map(link)));
  card.append(el("div", { className: "muted" }, op.summary || ""));
  if (op.reply) {
    const replies = op.reply.messages.map(messageOf);
    card.append(el("div", {}, "reply: ", ...replies.flatMap((m, i) => (i ? [" or ", link(m)] : [link(m)]))));
  }
  $(op.action).append(card);
}

function typeOf(schema) {
  if (!schema || Object.keys(schema).length === 0) return "any JSON";
  if (schema.$ref) return schema.$ref.split("/").at(-1);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
  if (schema.type === "array") return `array of ${typeOf(schema.items)}`;
  let text = schema.type || "any";
  if (schema.minimum !== undefined) text += ` ≥ ${schema.minimum}`;
  if (schema.pattern) text += ` matching ${schema.pattern}`;
  return text;
}

function fields(schema) {
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties || {}).map(([name, s]) =>
    el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, typeOf(s)), el("td", {}, required.has(name) ? "required" : "optional")),
  );
  return el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, ""))), el("tbody", {}, ...rows));
}

for (const [key, message] of Object.entries(doc.components.messages)) {
  const schema = resolve(message.payload.$ref);
  const card = el("section", { className: "card", id: anchor(message) });
  card.append(el("h3", {}, `${message.name} `, el("span", { className: "muted" }, `(${key})`)));
  card.append(el("p", { className: "muted" }, schema.description || message.summary || ""));
  card.append(fields(schema));
  for (const [name, s] of Object.entries(schema.properties || {})) {
    const nested = s.$ref ? resolve(s.$ref) : s.items && s.items.$ref && !s.items.$ref.endsWith("/Message") ? resolve(s.items.$ref) : null;
    if (nested && nested.properties) card.append(el("p", { className: "muted" }, el("code", {}, name), ": ", nested.description || ""), fields(nested));
  }
  $("messages").append(card);
}
