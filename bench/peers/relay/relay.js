#!/usr/bin/env node
// A zero-logic WebSocket relay, the peer hexmarket's live tracking is compared with
// (`hexmarket-loadgen relay`). Frames a client sends on /pub/{channel} go out verbatim, text
// or binary as they came, to every socket on /sub/{channel}. No auth, no parsing, no
// persistence: the floor of what fanning a courier's position out to its watchers can cost.
//
// With `--ack` it does the same socket work per position as hexmarket does: it reads the
// publisher's frame as JSON, acknowledges it to the publisher (the frame hexmarket sends a
// courier, `{"type":"ack","of":"location","accepted":1,"dropped":0}`), and forwards it to the
// subscribers: the fair peer for delivered frames per CPU-second.
//
// Usage: node relay.js [PORT] [--ack]   (or PORT=…; default 18390). Binds 127.0.0.1 only,
// prints "listening" once it accepts connections, exits on SIGTERM or SIGINT.
'use strict';

const http = require('node:http');
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
const ACK = args.includes('--ack');
const ACK_FRAME = JSON.stringify({ type: 'ack', of: 'location', accepted: 1, dropped: 0 });
const port = Number(args.find((a) => a !== '--ack') || process.env.PORT || 18390);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`relay: bad port ${process.argv[2] || process.env.PORT}`);
  process.exit(2);
}

// The same frame limit as hexmarket's sessions (64 KiB).
const MAX_PAYLOAD = 64 * 1024;
// A subscriber this far behind is closed (1013, as hexmarket closes a watcher that falls
// behind) rather than buffered without bound.
const MAX_BUFFERED = 1024 * 1024;

/** channel → the subscriber sockets on it. */
const channels = new Map();

const server = http.createServer((_req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({
  noServer: true,
  clientTracking: false,
  perMessageDeflate: false,
  maxPayload: MAX_PAYLOAD,
});

server.on('upgrade', (req, socket, head) => {
  const route = /^\/(pub|sub)\/([^/?#]+)$/.exec(req.url.split('?', 1)[0]);
  if (!route) {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  const [, role, channel] = route;
  wss.handleUpgrade(req, socket, head, (ws) => (role === 'pub' ? publisher : subscriber)(ws, channel));
});

function publisher(ws, channel) {
  ws.on('message', (data, isBinary) => {
    if (ACK) {
      // Read it as a position, as hexmarket does, and answer the publisher.
      let frame;
      try {
        frame = JSON.parse(data.toString());
      } catch {
        ws.send('{"type":"error","code":"invalid_json"}');
        return;
      }
      if (typeof frame !== 'object' || frame === null) return;
      ws.send(ACK_FRAME);
    }
    const subscribers = channels.get(channel);
    if (!subscribers) return;
    for (const sub of subscribers) {
      if (sub.bufferedAmount > MAX_BUFFERED) {
        sub.close(1013, 'too far behind');
      } else {
        sub.send(data, { binary: isBinary });
      }
    }
  });
  ws.on('error', () => {});
}

function subscriber(ws, channel) {
  let subscribers = channels.get(channel);
  if (!subscribers) {
    subscribers = new Set();
    channels.set(channel, subscribers);
  }
  subscribers.add(ws);
  ws.on('close', () => {
    subscribers.delete(ws);
    if (subscribers.size === 0 && channels.get(channel) === subscribers) channels.delete(channel);
  });
  // Subscribers only listen; anything they send is dropped.
  ws.on('error', () => {});
}

server.on('clientError', (_err, socket) => socket.destroy());
server.listen(port, '127.0.0.1', () => console.log(ACK ? 'listening (acknowledging)' : 'listening'));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
