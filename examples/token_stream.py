"""Streaming generated text to a browser token by token, over Server-Sent Events.

The shape of an LLM app: ``POST /generate`` starts a (fake) generator that publishes each
token to the channel the page names, as it is produced; the page reads the channel with the
browser's own ``EventSource`` on ``/sse`` and renders each token as it arrives. The page keeps
what it has rendered and the last event id together in ``sessionStorage``, so after a reload
it resumes the stream from that id (``?last_event_id=``): no token lost, none repeated, even
when the reload happens mid-answer.

Run it with ``uvicorn examples.token_stream:app`` from the repository root, and open
http://127.0.0.1:8000/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from wshub import Hub, Settings

ANSWER = (
    "Server-Sent Events are a plain HTTP response that never ends: the server writes one "
    "event after another, and the browser's EventSource hands each to the page as it "
    "arrives. When the stream drops, EventSource reconnects by itself and says which event "
    "it saw last, so the server can send what was missed and nothing twice."
)

TOKEN_SECONDS = 0.03
"""How long the fake model takes per token."""

# The channel's history must hold a whole answer, so that a reload at any point can resume.
hub = Hub("memory://", Settings(history_size=1000, history_ttl=600))
app = FastAPI(title="token stream example")
app.include_router(hub.router)
_generating: set[asyncio.Task[None]] = set()


async def fake_model(prompt: str) -> AsyncIterator[str]:
    """Tokens as a language model would produce them: a word (and its space) at a time."""
    for word in ANSWER.split(" "):
        await asyncio.sleep(TOKEN_SECONDS)
        yield word + " "


class Generate(BaseModel):
    channel: str = Field(pattern=r"^answer:[A-Za-z0-9_-]{1,64}$")
    prompt: str = Field(default="What are Server-Sent Events?", max_length=2000)


async def _stream_answer(channel: str, prompt: str) -> None:
    async for token in fake_model(prompt):
        await hub.publish(channel, {"token": token})
    await hub.publish(channel, {"done": True})


@app.post("/generate", status_code=202)
async def generate(body: Generate) -> dict[str, str]:
    """Start answering ``prompt`` into ``channel``; the tokens arrive on the page's stream."""
    task = asyncio.create_task(_stream_answer(body.channel, body.prompt))
    _generating.add(task)
    task.add_done_callback(_generating.discard)
    return {"channel": body.channel}


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>token stream</title>
<style>body { font: 16px/1.5 system-ui; max-width: 40em; margin: 2em auto }</style>
<h1>Answer</h1>
<p id="answer"></p>
<p id="status">connecting...</p>
<script>
// What the page has shown and the id of the last event behind it are saved together, so a
// reload resumes exactly after the last token shown.
const saved = JSON.parse(sessionStorage.getItem("answer") || "null");
const state = saved || {
  channel: "answer:" + crypto.randomUUID().replaceAll("-", ""), text: "", lastId: null,
  started: false, done: false,
};
const answer = document.getElementById("answer");
const status = document.getElementById("status");
answer.textContent = state.text;
const save = () => sessionStorage.setItem("answer", JSON.stringify(state));

let url = "/sse?channel=" + encodeURIComponent(state.channel);
if (state.lastId) url += "&last_event_id=" + encodeURIComponent(state.lastId);
const source = new EventSource(url);
source.addEventListener("joined", async () => {
  status.textContent = state.done ? "done" : "streaming";
  if (!state.started) {  // subscribed first, so that the first token is not missed
    state.started = true;
    save();
    await fetch("/generate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ channel: state.channel }),
    });
  }
});
source.addEventListener("message", (e) => {
  const data = JSON.parse(e.data).data;
  if (data.token) state.text += data.token;
  if (data.done) { state.done = true; status.textContent = "done"; }
  state.lastId = e.lastEventId;
  answer.textContent = state.text;
  save();
});
</script>
"""


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return PAGE
