// Drives Ferry's management API with Microsoft's npm management client, @azure/arm-relay.
// usage: node arm_relay.js ADMIN_URL NAMESPACE_HOST KEY_NAME KEY NAME
// Creates the hybrid connection NAME with user metadata, reads it back, lists the namespace's
// hybrid connections, deletes NAME and lists again; prints one JSON line with what the client
// parsed. The credential hands the client a SAS token of a Manage rule, which it sends as
// "Authorization: Bearer ..." (NODE_EXTRA_CA_CERTS trusts the gateway's CA).
'use strict';
const crypto = require('crypto');
const { RelayAPI } = require('@azure/arm-relay');

const [url, host, keyName, key, name] = process.argv.slice(2);
if (!url || !host || !keyName || !key || !name) {
  console.error('usage: node arm_relay.js ADMIN_URL NAMESPACE_HOST KEY_NAME KEY NAME');
  process.exit(2);
}

function sasToken(uri) {
  const expiry = Math.floor(Date.now() / 1000) + 3600;
  const resource = encodeURIComponent(uri.toLowerCase());
  const sig = crypto.createHmac('sha256', key).update(resource + '\n' + expiry).digest('base64');
  return `SharedAccessSignature sr=${resource}&sig=${encodeURIComponent(sig)}&se=${expiry}&skn=${keyName}`;
}

const credential = {
  getToken: async () => ({ token: sasToken(`sb://${host}/`), expiresOnTimestamp: Date.now() + 3000e3 }),
};

(async () => {
  const client = new RelayAPI(credential, '00000000-0000-0000-0000-000000000000', { $host: url, endpoint: url, credentialScopes: [url + '/.default'] });
  const group = 'ferry-rg';
  const ns = host.split('.')[0];
  const created = await client.hybridConnections.createOrUpdate(group, ns, name, {
    requiresClientAuthorization: false,
    userMetadata: 'made by @azure/arm-relay',
  });
  const got = await client.hybridConnections.get(group, ns, name);
  const before = [];
  for await (const h of client.hybridConnections.listByNamespace(group, ns)) before.push(h.name);
  await client.hybridConnections.delete(group, ns, name);
  const after = [];
  for await (const h of client.hybridConnections.listByNamespace(group, ns)) after.push(h.name);
  console.log(JSON.stringify({
    created: { name: created.name, anonymous: created.requiresClientAuthorization === false },
    userMetadata: got.userMetadata,
    listenerCount: got.listenerCount,
    before,
    after,
  }));
})().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.message), status: e && e.statusCode }));
  process.exit(1);
});
