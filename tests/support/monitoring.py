#!/usr/bin/env python3
"""The monitoring manifests: the PrometheusRule object rendered from the rule file.

    python3 tests/support/monitoring.py render   # prints the PrometheusRule for alerts.yaml
    python3 tests/support/monitoring.py check    # fails if prometheusrule.yaml differs

manifests/monitoring/alerts.yaml is the one source of the alerting rules: the jumphost's
Prometheus loads it as a rule file, and clusters that run the Prometheus Operator apply
prometheusrule.yaml, which holds the same groups. ci/test-manifests runs `check`.
"""
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
MONITORING = os.path.join(HERE, "..", "..", "manifests", "monitoring")
HEADER = (
    "# Generated from alerts.yaml by tests/support/monitoring.py render; do not edit.\n"
    "# The same rules for clusters that run the Prometheus Operator.\n"
)


def render():
    with open(os.path.join(MONITORING, "alerts.yaml")) as f:
        rules = yaml.safe_load(f)
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "test-machine-monitor",
            "namespace": "test-machine-monitor",
            "labels": {"app.kubernetes.io/name": "test-machine-monitor"},
        },
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=100)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "render":
        sys.stdout.write(render())
    elif what == "check":
        path = os.path.join(MONITORING, "prometheusrule.yaml")
        with open(path) as f:
            if f.read() != render():
                sys.exit(f"{path} is not what alerts.yaml renders to: run "
                         f"python3 tests/support/monitoring.py render > {path}")
        print("ok: prometheusrule.yaml holds the rules of alerts.yaml")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
