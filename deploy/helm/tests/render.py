#!/usr/bin/env python3
"""Lints and renders the causeway chart with real Helm (helm-python-sdk, Helm v4's
engine) and prints one JSON document for tests/tests/helm.rs, which parses and
checks every rendered object:

    {"helm": "<sdk version>",
     "crds": [{"name", "data"}],                  # the chart's crds/ as Helm loads them
     "scenarios": {"<values file stem>": {"lint": {...}, "manifests": {"<template>": "<yaml>"}}},
     "bad": {"<values file stem>": {"expect": "<substring>", "error": "<Helm's message>" | null}}}

Usage: render.py [CHART_DIR]  (default: ../causeway beside this script)
"""

import json
import pathlib
import sys

try:
    import helm_python as helm
except ImportError as e:  # Say what to install rather than a bare traceback.
    sys.exit(f"render.py: cannot import helm_python ({e}); pip install helm-python-sdk")

HERE = pathlib.Path(__file__).resolve().parent
RELEASE = "causeway"
NAMESPACE = "causeway"


def values_of(path: pathlib.Path) -> dict:
    return helm.values_from_yaml(path.read_text()) or {}


def expectation(path: pathlib.Path) -> str:
    """The `# expect: <text>` line of a bad values file: what Helm's refusal must name."""
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.split(":", 1)[1].strip()
    sys.exit(f"render.py: {path} has no '# expect: <text>' line")


def main() -> None:
    chart_dir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent / "causeway"
    chart = helm.Chart.load(chart_dir)
    out = {"helm": helm.__version__, "crds": [], "scenarios": {}, "bad": {}}
    out["crds"] = [{"name": c["name"], "data": c["data"]} for c in chart.crds]

    scenarios = [("default", None)] + [
        (p.stem, p) for p in sorted((HERE / "values").glob("*.yaml"))
    ]
    for name, path in scenarios:
        values = values_of(path) if path else None
        lint = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        out["scenarios"][name] = {"lint": lint, "manifests": manifests}

    for path in sorted((HERE / "bad").glob("*.yaml")):
        error = None
        try:
            chart.render(values_of(path), name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:
            error = str(e)
        out["bad"][path.stem] = {"expect": expectation(path), "error": error}

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
