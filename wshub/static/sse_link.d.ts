/** wshub's protocol over Server-Sent Events (`GET /sse` and `POST /sse/frame`), behind the
 * interface of a WebSocket: pass the class as `WshubClient`'s `WebSocket` option. */
export declare class SseLink {
  /** @param url the `/ws` URL the client would have opened (its `token` or `user` kept) */
  constructor(url: string);
  readonly url: string;
  readyState: number;
  onopen: ((event: object) => void) | null;
  onmessage: ((event: { data: string }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: object) => void) | null;
  send(text: string): void;
  close(code?: number, reason?: string): void;
}
