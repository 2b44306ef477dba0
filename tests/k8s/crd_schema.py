"""Strict validation against a CRD's structural OpenAPI v3 schema, with ``jsonschema``.

How the structural schema is mapped (apiextensions-apiserver semantics, k8s 1.32):

* an object node with ``properties`` and neither ``additionalProperties`` nor
  ``x-kubernetes-preserve-unknown-fields: true`` gets ``additionalProperties: false``: the API
  server prunes unknown fields there, and with ``fieldValidation=Strict`` (kubectl's default
  ``--validate=strict``) rejects them; a field the operator would silently drop is an error here;
* ``x-kubernetes-int-or-string`` nodes already carry ``anyOf: [integer, string]``; ``format``
  (int32/int64), ``default`` and ``description`` do not constrain (defaults are applied by the
  server) and are dropped; ``metadata`` is ``type: object`` (ObjectMeta is validated by the API
  server itself, not by the CRD schema);
* ``x-kubernetes-validations`` (CEL): transition rules (those naming ``oldSelf``) only apply on
  update and are skipped; the other rules the vendored CRDs hold are re-implemented in
  :data:`CEL_RULES`; an unknown rule fails the test rather than being ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

VENDOR = Path(__file__).with_name("vendor")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CEL_RULES: dict[str, Callable[[dict], bool]] = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": lambda o: bool(
        _DNS1035.match(o["metadata"]["name"])
    ),
    "size(self.metadata.name) <= 63": lambda o: len(o["metadata"]["name"]) <= 63,
    "self > 0 || self in ['auto', 'cpu', 'gpu']": lambda v: (
        (isinstance(v, int) and v > 0) or v in ("auto", "cpu", "gpu")
    ),
    "[has(self.torch), has(self.mpi), has(self.jax)].filter(x, x).size() <= 1": lambda v: (
        sum(k in v for k in ("torch", "mpi", "jax")) <= 1
    ),
}
_DROPPED = {"description", "default", "format"}


def _convert(node: dict[str, Any], rules: list[tuple[str, str]], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "x-kubernetes-validations":
            rules += [(path, r["rule"]) for r in value if "oldSelf" not in r["rule"]]
        elif key.startswith("x-kubernetes-") or key in _DROPPED:
            continue
        elif key == "properties":
            out[key] = {n: _convert(s, rules, f"{path}.{n}") for n, s in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, rules, f"{path}[]")
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_convert(s, rules, path) for s in value]
        else:
            out[key] = value
    open_ended = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("type") == "object" and "properties" in node and not open_ended:
        out["additionalProperties"] = False
    return out


def load(file: str, version: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(JSON Schema, root CEL rules) of ``version`` of the vendored CRD ``file``."""
    crd = yaml.safe_load((VENDOR / file).read_text())
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    rules: list[tuple[str, str]] = []
    schema = _convert(entry["schema"]["openAPIV3Schema"], rules, "")
    return schema, rules


def _at(obj: Any, path: str) -> list[Any]:
    """The values at a schema path like ``.spec.mlPolicy.torch.numProcPerNode`` (absent: [])."""
    values = [obj]
    for part in [p for p in path.split(".") if p]:
        values = [v[part] for v in values if isinstance(v, dict) and part in v]
    return values


def validate(obj: dict[str, Any], file: str, version: str) -> None:
    """Raise ``jsonschema.ValidationError`` / ``AssertionError`` when ``obj`` is invalid."""
    schema, rules = load(file, version)
    jsonschema.Draft7Validator(schema).validate(obj)
    for path, rule in rules:
        assert "[]" not in path, f"CEL rule inside a list not re-implemented: {path}: {rule}"
        assert rule in CEL_RULES, f"CEL rule not re-implemented: {rule!r}"
        for value in _at(obj, path):
            assert CEL_RULES[rule](value), f"{path or 'the object'}: breaks the CEL rule {rule}"
