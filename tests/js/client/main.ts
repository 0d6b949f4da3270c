// A program on the wshub npm package, as a user would write it: a token function gives a
// short token to connect with, then a longer one that the client sends as `refresh` before
// the first ends; publish and receive on both sides of the refresh, on one connection.
// Prints one JSON line per step for tests/test_js_package.py.
// Usage: node out/main.js ws://HOST:PORT TOKEN NEXT_TOKEN
import { WshubClient, type MessageFrame, type TokenRequest, type Welcome } from "wshub";

const [url, token, nextToken] = process.argv.slice(2);
const say = (step: string, detail: object): void => console.log(JSON.stringify({ step, ...detail }));

const tokens = [token, nextToken];
const client = new WshubClient(`${url}/ws`, {
  backoffMin: 100,
  token: async (why: TokenRequest) => {
    say("getToken", why);
    return tokens.shift() ?? null;
  },
});
const nextMessage = (): Promise<MessageFrame> =>
  new Promise((resolve) => {
    const stop = client.on("message", (m) => {
      stop();
      resolve(m);
    });
  });

const welcome: Welcome = await client.connect();
await client.join("chat:node", { meta: { runtime: "node" } });
let got = nextMessage();
const offset: number = await client.publish("chat:node", { text: "before" });
say("published", { user: welcome.user, offset, message: await got });

// Before the first token ends the client asks for the next one and sends it as `refresh`.
const refreshed = await new Promise<number | null>((resolve) =>
  client.on("refreshed", ({ expires }) => resolve(expires)),
);
got = nextMessage();
await client.publish("chat:node", { text: "after" });
say("refreshed", { expires: refreshed, reconnects: client.reconnects, message: await got });
client.close();
