// The dashboard: polls /admin/stats every second and draws the rates on a canvas.
const $ = (id) => document.getElementById(id);
const KEY = "wshub.apikey";
const WINDOW = 120; // points on the chart, one a second
const series = { in: [], out: [] };
let previous = null;
let timer = null;

const sum = (nodes, f) => nodes.reduce((total, n) => total + f(n), 0);
const fmt = (x) => (x >= 100 ? Math.round(x).toLocaleString() : (Math.round(x * 10) / 10).toLocaleString());

async function poll() {
  const key = sessionStorage.getItem(KEY);
  let response;
  try {
    response = await fetch("/admin/stats", { headers: { Authorization: `apikey ${key}` }, cache: "no-store" });
  } catch {
    $("updated").textContent = "server unreachable, retrying…";
    return;
  }
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    signOut(body.detail || `HTTP ${response.status}`);
    return;
  }
  if (!response.ok) return;
  update(await response.json());
}

function update(stats) {
  const nodes = stats.nodes;
  const totalIn = sum(nodes, (n) => n.published + n.direct_sent);
  const totalOut = sum(nodes, (n) => n.fanned_out + n.direct_fanned_out);
  if (previous) {
    const seconds = Math.max((stats.time - previous.time) / 1000, 0.001);
    // A restarted node resets its counters: a negative delta is a restart, not a rate.
    push("in", Math.max(totalIn - previous.in, 0) / seconds);
    push("out", Math.max(totalOut - previous.out, 0) / seconds);
  }
  previous = { time: stats.time, in: totalIn, out: totalOut };
  $("connections").textContent = sum(nodes, (n) => n.connections).toLocaleString();
  $("sse").textContent = sum(nodes, (n) => n.sse_streams || 0).toLocaleString();
  $("users").textContent = sum(nodes, (n) => n.users).toLocaleString();
  $("channels").textContent = stats.channels_total.toLocaleString();
  $("slow").textContent = sum(nodes, (n) => n.slow_consumers).toLocaleString();
  $("rate-in").textContent = fmt(series.in.at(-1) || 0);
  $("rate-out").textContent = fmt(series.out.at(-1) || 0);
  $("channel-total").textContent = stats.channels_total;
  $("channel-rows").replaceChildren(
    ...stats.channels.map((c) => row([c.channel, [c.subscribers, "num"]])),
  );
  $("node-rows").replaceChildren(
    ...nodes.map((n) =>
      row([
        n.host ? `${n.node} (${n.host}, pid ${n.pid})` : n.node, n.broker, [`${Math.round(n.uptime)} s`, "num"], [n.connections, "num"],
        [n.published, "num"], [n.fanned_out, "num"], [n.queued, "num"], [n.slow_consumers, "num"],
        pairs(n.errors), pairs(n.refused), [n.sse_streams || 0, "num"],
      ]),
    ),
  );
  $("updated").textContent = `updated ${new Date(stats.time).toLocaleTimeString()}`;
  draw();
}

function pairs(counts) {
  const entries = Object.entries(counts);
  return entries.length ? entries.map(([k, v]) => `${k}: ${v}`).join(", ") : "–";
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    const [value, cls] = Array.isArray(cell) ? cell : [cell, ""];
    td.textContent = typeof value === "number" ? value.toLocaleString() : value;
    if (cls) td.className = cls;
    tr.append(td);
  }
  return tr;
}

function push(name, value) {
  series[name].push(value);
  if (series[name].length > WINDOW) series[name].shift();
}

/** Two lines on a canvas with a "nice" y scale; redrawn whole each second. */
function draw() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  const pad = { left: 44, right: 8, top: 8, bottom: 18 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const top = niceMax(Math.max(1, ...series.in, ...series.out));
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#687185";
  g.strokeStyle = "#e3e6ec";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + plotH - (plotH * i) / 4;
    g.beginPath();
    g.moveTo(pad.left, y);
    g.lineTo(width - pad.right, y);
    g.stroke();
    g.textAlign = "right";
    g.fillText(fmt((top * i) / 4), pad.left - 6, y + 4);
  }
  g.textAlign = "left";
  g.fillText(`-${WINDOW} s`, pad.left, height - 4);
  g.textAlign = "right";
  g.fillText("now", width - pad.right, height - 4);
  for (const [name, color] of [["in", "#2f6fdf"], ["out", "#1f9d55"]]) {
    const points = series[name];
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    points.forEach((v, i) => {
      const x = pad.left + plotW - ((points.length - 1 - i) * plotW) / (WINDOW - 1);
      const y = pad.top + plotH - (v / top) * plotH;
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    });
    g.stroke();
  }
}

function niceMax(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 4, 6, 8, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function signIn(key) {
  sessionStorage.setItem(KEY, key);
  $("login").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
  poll();
  clearInterval(timer);
  timer = setInterval(poll, 1000);
}

function signOut(reason) {
  clearInterval(timer);
  sessionStorage.removeItem(KEY);
  previous = null;
  series.in.length = series.out.length = 0;
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
  $("login-error").hidden = !reason;
}

$("login-form").onsubmit = (event) => {
  event.preventDefault();
  signIn($("key").value);
};
$("logout").onclick = (event) => {
  event.preventDefault();
  signOut();
};
window.addEventListener("resize", draw);
if (sessionStorage.getItem(KEY)) signIn(sessionStorage.getItem(KEY));
