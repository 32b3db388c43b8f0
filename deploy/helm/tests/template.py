#!/usr/bin/env python3
"""Renders the causeway chart with real Helm (helm-python-sdk, Helm v4's engine) for an
install, as `helm template` would, and prints one JSON document:

    {"crds": ["<yaml>", ...], "manifests": {"<template>": "<yaml>"}}

The test harness (tests/src/harness/control_plane/install.rs) applies what it prints to a
real API server with `kubectl apply --server-side`.

Usage: template.py RELEASE_NAMESPACE < values.json   (chart: ../causeway beside this script)
"""

import json
import pathlib
import sys

try:
    import helm_python as helm
except ImportError as e:  # Say what to install rather than a bare traceback.
    sys.exit(f"template.py: cannot import helm_python ({e}); pip install helm-python-sdk")

HERE = pathlib.Path(__file__).resolve().parent
RELEASE = "causeway"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: template.py RELEASE_NAMESPACE < values.json")
    namespace = sys.argv[1]
    values = json.load(sys.stdin)
    chart = helm.Chart.load(HERE.parent / "causeway")
    try:
        manifests = chart.render(values, name=RELEASE, namespace=namespace, is_install=True)
    except helm.HelmError as e:
        sys.exit(f"template.py: Helm refused the values: {e}")
    json.dump({"crds": [c["data"] for c in chart.crds], "manifests": manifests}, sys.stdout)


if __name__ == "__main__":
    main()
