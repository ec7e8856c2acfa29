"""The config model's building blocks: the `Section` base class and reusable `Annotated` field types (a type's check
raises `reject(what, fix)`). Light on purpose: it loads at program evaluation."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

# Kubernetes resource.Quantity (positive; no signs in requests/limits we accept).
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
MEMORY_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DIGEST_REF = r"^[^\s@]+@sha256:[0-9a-f]{64}$"
SINGLE_NODE_MODES = ("ReadWriteOnce", "ReadWriteOncePod")


@dataclass(frozen=True)
class Fix:  # field metadata: the fix printed when the field's type, bounds or pattern reject a value
    text: str


@dataclass(frozen=True)
class DefaultText:  # field metadata: how the docs show a default that follows another key
    text: str


@dataclass(frozen=True)
class DocType:  # type metadata: the type name the configuration reference shows (`quantity`, `secret`)
    name: str


def reject(what: str, fix: str) -> PydanticCustomError:
    """Why a value is refused and the fix the report prints (`raise reject(...)` in a type's check)."""
    return PydanticCustomError("rule", what, {"fix": fix})


def problem(loc: str | tuple[str | int, ...], value: Any, what: str, fix: str) -> InitErrorDetails:
    """One broken rule at `loc` (relative to the model that checks it; a dotted string is one key per part)."""
    parts = tuple(loc.split(".")) if isinstance(loc, str) else loc
    return InitErrorDetails(type=reject(what, fix), loc=parts, input=value)


def raise_problems(model: str, problems: Iterable[InitErrorDetails]) -> None:
    """Raise every problem at once; inside a validator pydantic merges them into the whole report."""
    if found := list(problems):
        raise ValidationError.from_exception_data(model, found)


def json_object(value: Any) -> Any:
    """`pulumi config set key '{"a": 1}'` (without --path) stores the object as a JSON string."""
    if isinstance(value, str) and value.startswith(("{", "[")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def aliases(model: type[BaseModel]) -> list[str]:  # the model's keys as users write them
    return [info.alias or name for name, info in model.model_fields.items()]


class Section(BaseModel):
    """A config section: unknown keys are errors, keys are camelCase as users write them, defaults validated.

    A section adds defaults that follow other keys in `prepare` and states its rules across fields in `problems`
    (plain methods: mutation testing reaches them, docs/mutation.md)."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=True,
        use_attribute_docstrings=True,  # a field's docstring is its description (docs/configuration.md)
    )

    @model_validator(mode="before")
    @classmethod
    def _before(cls, value: Any) -> Any:
        value = json_object(value)
        return cls.prepare(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _after(self) -> Self:
        raise_problems(type(self).__name__, self.problems())
        return self

    @classmethod
    def prepare(cls, value: dict[str, Any]) -> dict[str, Any]:  # the object as written, before its fields' checks
        return value

    def problems(self) -> Iterable[InitErrorDetails]:  # the rules across its fields it breaks, each at its key
        return []


def empty_section() -> Any:
    """The default of a section left out: an empty object, validated (`validate_default`) like a written one."""
    return {}


def quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity ("4Gi" -> 4294967296)."""
    m = QUANTITY.match(quantity)
    if not m:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, suffix = float(m.group(1)), m.group(3) or ""
    if suffix.lower().startswith("e") and suffix[1:].isdigit():
        return int(number * 10 ** int(suffix[1:]))
    if suffix == "m":
        return int(number / 1000)
    return int(number * MEMORY_UNITS[suffix])


def _number_as_text(value: Any) -> Any:
    # `cpu: 2` in YAML is a number; Kubernetes quantities are strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


def _positive_quantity(value: str) -> str:
    m = QUANTITY.match(value)
    if not m or float(m.group(1)) <= 0:
        raise reject("is not a positive Kubernetes quantity", 'use e.g. "2", "500m" (CPU) or "4Gi" (memory)')
    return value


def _dns_label(value: str, max_len: int) -> str:
    if DNS_LABEL.match(value) and len(value) <= max_len:
        return value
    raise reject(
        f"is not a lowercase RFC 1123 label of at most {max_len} characters",
        "use lowercase letters, digits and '-', starting and ending with a letter or digit",
    )


def _absolute(value: str) -> str:
    if value.startswith("/") and value != "/":
        return value
    raise reject("must be an absolute path below /", "use e.g. /data")


def comma_list(value: Any) -> Any:
    """A list may be given as one comma-separated string (`pulumi config set verify.columns ra,dec`)."""
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return value


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise reject("is not an IP address block", "use CIDR notation, e.g. 0.0.0.0/0 or 10.0.0.0/8") from None


def _port(value: int) -> int:
    if 1 <= value <= 65535:
        return value
    raise reject("is not a TCP port", "use a port between 1 and 65535")


Quantity = Annotated[
    str,
    BeforeValidator(_number_as_text),
    AfterValidator(_positive_quantity),
    DocType("quantity"),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": QUANTITY.pattern}, {"type": "number", "minimum": 0}]}),
]
DnsLabel = Annotated[
    str,
    AfterValidator(partial(_dns_label, max_len=63)),
    WithJsonSchema({"type": "string", "pattern": DNS_LABEL.pattern, "maxLength": 63}),
]
ObjectName = Annotated[
    str,
    AfterValidator(partial(_dns_label, max_len=253)),
    WithJsonSchema({"type": "string", "pattern": DNS_LABEL.pattern, "maxLength": 253}),
]
AbsolutePath = Annotated[str, AfterValidator(_absolute)]
Cidr = Annotated[str, AfterValidator(_cidr), WithJsonSchema({"type": "string"})]
Port = Annotated[int, AfterValidator(_port), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 65535})]


# A secret in the stack file is `{secure: v1:...}` (`pulumi config set --secret`); the runtime hands the program
# decrypted values of the top-level keys it lists as secret. The model keeps only one of these markers.
SECRET = "[secret]"
PLAINTEXT = "[plaintext]"
SECRET_SCHEMA = WithJsonSchema(
    {
        "type": "object",
        "properties": {"secure": {"type": "string"}},
        "required": ["secure"],
        "additionalProperties": False,
        "description": "A Pulumi secret: set it with `pulumi config set --path --secret <key> <value>`.",
    }
)


def _secret(value: Any, info: ValidationInfo, path: str) -> str:
    """A value that must be a Pulumi secret under `path`'s top-level key, replaced by its marker (so in the problem)."""
    secret_keys = (info.context or {}).get("secret_keys", ())
    if (isinstance(value, dict) and "secure" in value) or path.split(".")[0] in secret_keys:
        return SECRET
    fix = f"re-set it as a secret: pulumi config set --path --secret {path} <value>"
    raise_problems("secret", [problem((), PLAINTEXT, "is stored in plaintext in the stack file", fix)])
    return PLAINTEXT  # not reached


def masked_object(value: Any) -> Any:
    """Secrets given as anything but an object are reported as [secret], never shown."""
    value = json_object(value)
    return value if isinstance(value, dict) else SECRET


# The secret fields, declared as such: their values never enter the model (see components.config).
CredentialValue = Annotated[
    str, BeforeValidator(partial(_secret, path="storage.objectStore.credentials.<key>")), SECRET_SCHEMA
]
Password = Annotated[str, BeforeValidator(partial(_secret, path="image.registry.password")), SECRET_SCHEMA]
CatalogCredentialValue = Annotated[
    str, BeforeValidator(partial(_secret, path="catalogs.<name>.credentials.<key>")), SECRET_SCHEMA
]
