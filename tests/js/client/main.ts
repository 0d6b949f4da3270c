// A program on the wshub npm package, as a user would write it: connect with a token that
// expires while connected, renew it through getToken, publish and receive on both sides of
// the renewal. Prints one JSON line per step for tests/test_js_package.py.
// Usage: node out/main.js ws://HOST:PORT TOKEN NEXT_TOKEN
import { WshubClient, type MessageFrame, type StopInfo, type Welcome } from "wshub";

const [url, token, nextToken] = process.argv.slice(2);
const say = (step: string, detail: object): void => console.log(JSON.stringify({ step, ...detail }));

const client = new WshubClient(`${url}/ws`, {
  token,
  backoffMin: 100,
  getToken: (why: StopInfo) => {
    say("getToken", why);
    return nextToken;
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

// The first token expires: the client asks getToken, reconnects and joins from its position.
await new Promise<void>((resolve) => client.on("welcome", () => resolve()));
got = nextMessage();
await client.publish("chat:node", { text: "after" });
say("renewed", { reconnects: client.reconnects, message: await got });
client.close();
