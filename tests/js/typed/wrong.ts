// Must NOT type-check, each marked line with its own error: the types are real, not any.
import { WshubClient } from "wshub";
import { publish, subscribe } from "./channels.js";

const client = new WshubClient("ws://127.0.0.1:8000/ws");
await publish(client, "orders:42", { status: "lost", at: "2026-12-01T00:00:00Z" }); // WRONG enum
await publish(client, "orders:42", { status: "placed" }); // WRONG missing at
await subscribe(client, "orders:42", (event) => console.log(event.statu)); // WRONG no such field
await publish(client, "feed:news", [{ sku: 1, qty: 1 }]); // WRONG sku is a string
await publish(client, "orders:42", { status: "placed", at: "x", extra: 1 }); // WRONG extra field
