"""Parses an OpenMetrics exposition from stdin with the Prometheus client's strict parser
(prometheus_client.openmetrics.parser) and prints every sample as JSON lines:
{"name": ..., "labels": {...}, "value": ...}. Exits non-zero, with the parser's reason, on
text that breaks the format's rules."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            print(json.dumps({"name": s.name, "type": family.type, "labels": s.labels, "value": s.value}))
except Exception as e:  # the parser's own exceptions are plain ValueErrors
    print(f"not valid OpenMetrics: {e}", file=sys.stderr)
    sys.exit(1)
