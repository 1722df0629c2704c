"""Scrapes Ferry's /metrics and parses it with the reference parser of PyPI prometheus-client.

usage: python3 scrape.py METRICS_URL BEARER_TOKEN
Prints one JSON object: the samples as [name, labels, value] triples. The OpenMetrics parser
is strict: a malformed exposition (bad escaping, a missing # EOF, a sample that does not belong
to its family) fails here.
"""
import json
import sys

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

url, token = sys.argv[1:]
reply = requests.get(url, headers={"Authorization": "Bearer " + token}, timeout=30)
reply.raise_for_status()
content_type = reply.headers.get("Content-Type", "")
samples = []
for family in text_string_to_metric_families(reply.text):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps({"contentType": content_type, "samples": samples}))
