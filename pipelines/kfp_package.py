"""A compiled pipeline YAML, and the arguments and crons given for it, checked before any server
is contacted."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfdetr.errors import UserError

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#\-]+$")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, min, max, names) of each field: robfig/cron v1.2.0 spec.go bounds, as KFP parses it.
_CRON_BOUNDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(_MONTHS, 1)}),
    ("day-of-week", 0, 6, {d: i for i, d in enumerate(_DAYS)}),
)
_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {  # parameterType: (Python, in words)
    "STRING": (str, "a string"),
    "BOOLEAN": (bool, "true or false"),
    "NUMBER_INTEGER": (int, "an integer"),
    "NUMBER_DOUBLE": ((int, float), "a number"),
    "LIST": (list, "a JSON list"),
    "STRUCT": (dict, "a JSON object"),
}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class ParamSpec:
    """One pipeline parameter of the compiled YAML (``root.inputDefinitions.parameters``)."""

    name: str
    type: str  # STRING, NUMBER_INTEGER, NUMBER_DOUBLE, BOOLEAN, LIST, STRUCT
    required: bool


@dataclass(frozen=True)
class PipelinePackage:
    """A compiled pipeline YAML; ``sha256`` (of its bytes) identifies what a version holds."""

    path: Path
    name: str
    parameters: dict[str, ParamSpec]
    sha256: str
    description: str = ""  # pipelineInfo.description

    def usage(self) -> str:
        """What a UI user needs to start a run: the UI shows the upload's description, never a
        parameter's (KFP 2.17 frontend NewRunParametersV2.tsx l.164)."""
        required = sorted(name for name, spec in self.parameters.items() if spec.required)
        parts = [self.description.strip()] if self.description.strip() else []
        if required:
            parts.append(f"Required: {', '.join(required)}.")
        parts.append(
            "Blank fields keep their defaults (training knobs: the model preset's); "
            "parameter help: README, 'The Kubeflow pipeline'."
        )
        return " ".join(parts)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PipelinePackage:
        import yaml

        file = Path(path)
        try:
            content = file.read_bytes()
            docs = list(yaml.safe_load_all(content.decode("utf-8")))
        except UnicodeDecodeError:
            raise UserError(f"{file}: not YAML: not UTF-8 text") from None
        except OSError as exc:
            raise UserError(f"{file}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"{file}: not YAML: {str(exc).splitlines()[0]}") from None
        spec = next((d for d in docs if isinstance(d, dict) and "pipelineInfo" in d), None)
        if spec is None or "root" not in spec:
            raise UserError(f"{file}: not a compiled KFP v2 pipeline (no pipelineInfo/root)")
        raw = spec["root"].get("inputDefinitions", {}).get("parameters", {}) or {}
        params = {
            name: ParamSpec(
                name,
                str(item.get("parameterType", "STRING")),
                "defaultValue" not in item and not item.get("isOptional", False),
            )
            for name, item in raw.items()
        }
        digest = hashlib.sha256(content).hexdigest()
        info = spec["pipelineInfo"]
        return cls(file, str(info["name"]), params, digest, str(info.get("description") or ""))


def _coerce(spec: ParamSpec, value: Any, from_text: bool) -> Any:
    """``value`` as the JSON type of ``spec``; CLI text is parsed, file values are checked."""
    accepted, what = _TYPES.get(spec.type, ((), "a JSON object"))
    number = spec.type.startswith("NUMBER")
    try:
        if from_text and spec.type == "BOOLEAN":
            value = _BOOLS.get(value.strip().lower(), value)
        elif from_text and spec.type != "STRING":
            value = json.loads(value)
        if spec.type == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, accepted) or (number and isinstance(value, bool)):
            raise ValueError(f"expected {what}")
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"parameter {spec.name}={value!r}: {exc}") from None
    return float(value) if spec.type == "NUMBER_DOUBLE" else value


def build_params(
    package: PipelinePackage, cli_pairs: list[str], params_file: Path | None = None
) -> dict[str, Any]:
    """Pipeline arguments from ``--params-file`` (JSON/YAML mapping) then ``--param k=v``, checked
    against ``package`` (names, types, required ones); raises UserError."""
    values: dict[str, tuple[Any, bool]] = {}
    if params_file is not None:
        import yaml

        try:
            doc = yaml.safe_load(params_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"{params_file}: cannot read parameters: {exc}") from None
        if not isinstance(doc, dict):
            raise UserError(f"{params_file}: expected a mapping of parameter names to values")
        values.update({str(k): (v, False) for k, v in doc.items()})
    for pair in cli_pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--param {pair!r}: expected NAME=VALUE")
        values[name.strip()] = (text, True)
    known = package.parameters
    params = {}
    for name, (value, from_text) in values.items():
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
            )
            raise UserError(f"unknown pipeline parameter {name!r}{hint}")
        params[name] = _coerce(known[name], value, from_text)
    missing = sorted(n for n, s in known.items() if s.required and n not in params)
    if missing:
        raise UserError(f"missing required pipeline parameter(s): {', '.join(missing)}")
    return params


def validate_cron(expression: str) -> str:
    """Return ``expression`` when it is a 6-field KFP cron (seconds first); else UserError."""
    fields = expression.split()
    if len(fields) == 5:
        raise UserError(
            f"cron {expression!r} has 5 fields, but KFP's cron has 6, seconds first "
            f"(a 5-field expression would fire far more often than meant); "
            f"did you mean '0 {expression.strip()}'?"
        )
    if len(fields) != 6:
        raise UserError(
            f"cron {expression!r} has {len(fields)} field(s); KFP's cron has 6: "
            "second minute hour day-of-month month day-of-week, e.g. '0 0 3 * * 1' (Mondays 03:00)"
        )
    bad = [f for f in fields if not _CRON_FIELD.match(f)]
    if bad:
        raise UserError(f"cron {expression!r}: field {bad[0]!r} has characters cron does not use")
    for field, (name, low, high, names) in zip(fields, _CRON_BOUNDS, strict=True):
        if not all(_cron_range(r, low, high, names) for r in field.split(",") if r):
            raise UserError(f"cron {expression!r}: {name} {field!r} is outside {low}-{high}")
    return " ".join(fields)


def _cron_range(text: str, low: int, high: int, names: dict[str, int]) -> bool:
    """Whether robfig/cron v1.2.0 ``getRange`` (parser.go) takes ``text`` (``N/STEP``: N to max)."""
    span, slash, step = text.partition("/")
    ends = [int(v) if v.isdigit() else names.get(v.lower(), -1) for v in span.split("-")]
    first, last = (low, high) if span in ("*", "?") else (ends[0], ends[-1])
    if slash and len(ends) == 1:
        last = high
    return (
        len(ends) <= 2
        and (not slash or (step.isdigit() and int(step) > 0))
        and low <= first <= last <= high
    )
