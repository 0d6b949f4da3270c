// Must NOT type-check: proves the declarations are real types, not `any`.
import { WshubClient } from "wshub";

const client = new WshubClient("ws://127.0.0.1:1/ws", { tokn: "x" });
client.on("message", (m) => m.chanel);
const offset: string = await client.publish("chat:x", { text: "hi" });
