// Node `ws` fan-out: the fastest common way to broadcast with it. Each publication's frame is
// built once (Sender.frame: header + payload, unmasked) and the same bytes are written to every
// receiver's socket, as the `ws` README's broadcast advice suggests for many recipients.
//
// Mini-protocol shared with the other "room" peers (benchmarks/peers/__init__.py):
//   GET /ws?room=R         a receiver: joins R, gets {"type":"joined"}
//   GET /ws?room=R&pub=1   a publisher: every text it sends goes, as is, to R's receivers
'use strict';
const { WebSocketServer, Sender } = require('ws');

const port = Number(process.argv[2] || 8000);
const rooms = new Map();
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

wss.on('connection', (ws, req) => {
  const url = new URL(req.url, 'http://localhost');
  const name = url.searchParams.get('room') || 'bench';
  if (!rooms.has(name)) rooms.set(name, new Set());
  const room = rooms.get(name);
  if (!url.searchParams.has('pub')) {
    room.add(ws);
    ws.send('{"type":"joined"}');
  }
  ws.on('message', (data, isBinary) => {
    const frame = Buffer.concat(
      Sender.frame(data, { fin: true, opcode: isBinary ? 2 : 1, mask: false, readOnly: false, rsv1: false })
    );
    for (const peer of room) {
      if (peer.readyState === 1) peer._socket.write(frame);
    }
  });
  ws.on('close', () => room.delete(ws));
  ws.on('error', () => room.delete(ws));
});
wss.on('listening', () => console.log(`node ws listening on ${port}`));
