// A hyco-ws sender used by Ferry's interop tests.
// usage: node sender.js CONNECT_URI KEY_NAME KEY
// Connects with a token from hyco-ws's own createRelayToken, expects the listener's greeting,
// sends a text and a binary message, checks the transformed echoes ("echo:" + text, reversed
// bytes), closes with 1000 and prints one JSON line with what it saw. Exit 0 only on success.
'use strict';
const WebSocket = require('hyco-ws');

const [uri, keyName, key] = process.argv.slice(2);
if (!uri || !keyName || !key) {
  console.error('usage: node sender.js CONNECT_URI KEY_NAME KEY');
  process.exit(2);
}
const fail = (why) => { console.log(JSON.stringify({ ok: false, why })); process.exit(1); };
setTimeout(() => fail('timed out'), 20000).unref();

const text = 'héllo ✓ <&> from hyco-ws';
const binary = Buffer.alloc(100000);
for (let i = 0; i < binary.length; i++) binary[i] = (i * 31 + 7) & 0xff;
const seen = { greeting: null, text: null, binaryOk: false, binaryLen: 0 };

const token = WebSocket.createRelayToken(uri, keyName, key);
const ws = WebSocket.relayedConnect(uri, token, () => {});
let step = 0;
ws.on('message', (data, flags) => {
  if (step === 0) {
    seen.greeting = String(data);
    step = 1;
    ws.send(text);
  } else if (step === 1) {
    seen.text = String(data);
    step = 2;
    ws.send(binary, { binary: true });
  } else if (step === 2) {
    const got = Buffer.from(data);
    seen.binaryLen = got.length;
    seen.binaryOk = !!(flags && flags.binary) && got.equals(Buffer.from(binary).reverse());
    step = 3;
    ws.close(1000, 'done');
  }
});
ws.on('close', (code) => {
  if (step !== 3) fail('closed early with ' + code);
  const ok = seen.text === 'echo:' + text && seen.binaryOk && !!seen.greeting;
  console.log(JSON.stringify({ ok, code, ...seen }));
  process.exit(ok ? 0 : 1);
});
ws.on('error', (e) => fail('error: ' + (e && e.message)));
