// A hyco-ws listener used by Ferry's interop tests.
// usage: node listener.js LISTEN_URI KEY_NAME KEY
// Prints "LISTENING" once its control channel is open. For every relayed connection it sends
// a greeting, then answers each text message with "echo:" + text and each binary message with
// its bytes reversed, so the test sees traffic that really went through this process.
'use strict';
const WebSocket = require('hyco-ws');

const [uri, keyName, key] = process.argv.slice(2);
if (!uri || !keyName || !key) {
  console.error('usage: node listener.js LISTEN_URI KEY_NAME KEY');
  process.exit(2);
}

const server = WebSocket.createRelayedServer(
  { server: uri, token: () => WebSocket.createRelayToken(uri, keyName, key) },
  (ws) => {
    // hyco-ws emits 'connection' before the rendezvous socket is open.
    ws.on('open', () => ws.send('hello from hyco-ws'));
    ws.on('message', (data, flags) => {
      if (flags && flags.binary) {
        ws.send(Buffer.from(data).reverse(), { binary: true });
      } else {
        ws.send('echo:' + data);
      }
    });
    ws.on('close', (code, reason) => console.log('CLOSED ' + code + ' ' + (reason || '')));
  });
server.on('listening', () => console.log('LISTENING'));
server.on('error', (e) => console.error('listener error: ' + (e && e.message)));
process.on('SIGTERM', () => { server.close(); process.exit(0); });
