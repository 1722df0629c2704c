"""Drives Ferry's management API with Microsoft's own management SDK (PyPI azure-mgmt-relay).

usage: python3 mgmt.py ADMIN_URL NAMESPACE KEY_NAME KEY OP [ARGS...]

The SDK authenticates with a TokenCredential; this one hands it a SAS token for the namespace,
signed with a rule that has Manage rights, made the way Azure's documentation makes them. The
SDK sends it as `Authorization: Bearer ...` over HTTPS (REQUESTS_CA_BUNDLE names the CA).
Every operation prints one JSON line with what the SDK returned, as the SDK parsed it.
"""
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.parse

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.relay import RelayAPIMgmtClient
from azure.mgmt.relay.models import (
    AuthorizationRule,
    AuthorizationRuleProperties,
    HybridConnection,
    HybridConnectionProperties,
    NetworkRuleSet,
    NetworkRuleSetProperties,
    NWRuleSetIpRules,
    RegenerateAccessKeyParameters,
    WcfRelay,
    WcfRelayProperties,
)

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP = "ferry-rg"


def sas_token(uri, key_name, key, ttl=3600):
    expiry = str(int(time.time() + ttl))
    resource = urllib.parse.quote_plus(uri.lower())
    signed = (resource + "\n" + expiry).encode("utf-8")
    sig = base64.b64encode(hmac.new(key.encode("utf-8"), signed, hashlib.sha256).digest())
    return "SharedAccessSignature sr={}&sig={}&se={}&skn={}".format(
        resource, urllib.parse.quote_plus(sig), expiry, key_name)


class SasCredential:
    def __init__(self, host, key_name, key):
        self.host, self.key_name, self.key = host, key_name, key

    def get_token(self, *scopes, **kwargs):
        return AccessToken(sas_token("sb://" + self.host + "/", self.key_name, self.key),
                           int(time.time()) + 3000)


def keys_json(k):
    return {"keyName": k.key_name, "primaryKey": k.primary_key, "secondaryKey": k.secondary_key,
            "primaryConnectionString": k.primary_connection_string,
            "secondaryConnectionString": k.secondary_connection_string}


def main():
    url, host, key_name, key, op, *args = sys.argv[1:]
    client = RelayAPIMgmtClient(SasCredential(host, key_name, key), SUBSCRIPTION, base_url=url)
    ns = host.split(".")[0]
    hc = client.hybrid_connections
    try:
        if op == "namespace":
            n = client.namespaces.get(GROUP, ns)
            out = {"name": n.name, "type": n.type, "status": n.status,
                   "serviceBusEndpoint": n.service_bus_endpoint,
                   "listed": [x.name for x in client.namespaces.list_by_resource_group(GROUP)]}
        elif op == "create":
            name, metadata, auth = args
            h = hc.create_or_update(GROUP, ns, name, HybridConnection(
                properties=HybridConnectionProperties(
                    requires_client_authorization=(auth == "true"), user_metadata=metadata)))
            out = {"name": h.name, "id": h.id, "userMetadata": h.user_metadata,
                   "requiresClientAuthorization": h.requires_client_authorization,
                   "listenerCount": h.listener_count, "createdAt": str(h.created_at)}
        elif op == "get":
            h = hc.get(GROUP, ns, args[0])
            out = {"name": h.name, "userMetadata": h.user_metadata,
                   "listenerCount": h.listener_count,
                   "listed": [x.name for x in hc.list_by_namespace(GROUP, ns)]}
        elif op == "rule":
            name, rule, rights = args
            r = hc.create_or_update_authorization_rule(GROUP, ns, name, rule, AuthorizationRule(
                properties=AuthorizationRuleProperties(rights=rights.split(","))))
            out = {"name": r.name, "rights": list(r.rights),
                   "listed": [x.name for x in hc.list_authorization_rules(GROUP, ns, name)]}
        elif op == "keys":
            out = keys_json(hc.list_keys(GROUP, ns, args[0], args[1]))
        elif op == "regenerate":
            name, rule, which = args
            out = keys_json(hc.regenerate_keys(GROUP, ns, name, rule,
                                               RegenerateAccessKeyParameters(key_type=which)))
        elif op == "namespace-rule":
            rule, rights = args
            r = client.namespaces.create_or_update_authorization_rule(
                GROUP, ns, rule, AuthorizationRule(
                    properties=AuthorizationRuleProperties(rights=rights.split(","))))
            k = client.namespaces.list_keys(GROUP, ns, rule)
            out = {"name": r.name, "rights": list(r.rights), **keys_json(k)}
        elif op == "wcf":
            name, relay_type = args
            w = client.wcf_relays.create_or_update(GROUP, ns, name, WcfRelay(
                properties=WcfRelayProperties(relay_type=relay_type,
                                              requires_client_authorization=True)))
            out = {"name": w.name, "relayType": w.relay_type,
                   "listed": [x.name for x in client.wcf_relays.list_by_namespace(GROUP, ns)]}
        elif op == "network":
            default, *rules = args
            ip_rules = [NWRuleSetIpRules(ip_mask=m, action=a)
                        for m, a in (r.split("=") for r in rules)]
            client.namespaces.create_or_update_network_rule_set(GROUP, ns, NetworkRuleSet(
                properties=NetworkRuleSetProperties(default_action=default, ip_rules=ip_rules)))
            g = client.namespaces.get_network_rule_set(GROUP, ns)
            out = {"defaultAction": g.default_action,
                   "ipRules": [[r.ip_mask, r.action] for r in (g.ip_rules or [])]}
        elif op == "delete":
            hc.delete(GROUP, ns, args[0])
            out = {"deleted": args[0], "listed": [x.name for x in hc.list_by_namespace(GROUP, ns)]}
        else:
            raise SystemExit("unknown operation " + op)
    except HttpResponseError as e:
        out = {"status": e.status_code, "code": e.error.code if e.error else None,
               "message": e.error.message if e.error else str(e)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
