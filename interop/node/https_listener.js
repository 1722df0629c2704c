// A hyco-https listener used by Ferry's interop tests.
// usage: node https_listener.js LISTEN_URI KEY_NAME KEY
// Prints "LISTENING" once its control channel is open. Every request is answered with a JSON
// description of what arrived (method, url, headers, body length and SHA-256), except
// GET .../big?n=N, answered with N bytes of the pattern (i*31+7)&255, which makes hyco-https
// answer over a rendezvous socket once N > 64 KB.
'use strict';
const https = require('hyco-https');
const crypto = require('crypto');

const [uri, keyName, key] = process.argv.slice(2);
if (!uri || !keyName || !key) {
  console.error('usage: node https_listener.js LISTEN_URI KEY_NAME KEY');
  process.exit(2);
}

const server = https.createRelayedServer(
  { server: uri, token: () => https.createRelayToken(uri, keyName, key) },
  (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const big = /\/big\?n=(\d+)/.exec(req.url);
      if (big) {
        const n = parseInt(big[1], 10);
        const out = Buffer.alloc(n);
        for (let i = 0; i < n; i++) out[i] = (i * 31 + 7) & 0xff;
        res.setHeader('Content-Type', 'application/octet-stream');
        res.setHeader('X-Pattern', 'i*31+7');
        res.end(out);
        return;
      }
      res.setHeader('Content-Type', 'application/json');
      res.setHeader('X-Listener', 'hyco-https');
      res.statusCode = req.url.includes('status=201') ? 201 : 200;
      res.end(JSON.stringify({
        method: req.method,
        url: req.url,
        headers: req.headers,
        length: body.length,
        sha256: crypto.createHash('sha256').update(body).digest('hex'),
      }));
    });
  });
server.on('listening', () => console.log('LISTENING'));
server.listen();
server.on('error', (e) => console.error('listener error: ' + e));
