"""Reading a catalog (CSV, JSON or JSONL; local path or ``s3://``) into validated products.

Each row is validated on its own: a bad row becomes a ``RowError`` naming the file, line, field and
reason, and is never submitted; the good rows run. Problems with the file as a whole (missing, wrong
encoding, missing required columns, no rows) raise ``CatalogError``.

CSV columns: ``asin, country_code, title`` (required), ``category, description, image_url``,
further images as ``image_url_2 ...`` or ``image_urls`` (``|``-separated), ``variations`` (JSON list of
``{"asin": ..., <attribute>: ...}`` or ``ASIN:attr=value;attr=value|ASIN:...``) and ``overrides``
(JSON object). JSON/JSONL rows use the same keys, with lists and objects as native values.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from providers.contract import MARKETPLACES, Product, Variation

REQUIRED_COLUMNS = ("asin", "country_code", "title")
KNOWN_OVERRIDES = {"steps", "providers", "copy_options", "image_options", "aplus_options", "scale_options"}


class CatalogError(ValueError):
    """The catalog cannot be read at all."""


class RowError(BaseModel):
    source: str
    line: int
    asin: str | None = None
    field: str | None = None
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}"
        what = f" field '{self.field}'" if self.field else ""
        who = f" (asin {self.asin})" if self.asin else ""
        return f"{where}{who}{what}: {self.reason}"


class Catalog(BaseModel):
    source: str
    products: list[Product]
    rejected: list[RowError]


def read_bytes(uri: str, *, s3_endpoint_url: str | None = None) -> bytes:
    if uri.startswith("s3://"):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = uri[5:].partition("/")
        try:
            obj = boto3.client("s3", endpoint_url=s3_endpoint_url).get_object(Bucket=bucket, Key=key)
            return obj["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise CatalogError(f"{uri}: cannot read catalog: {exc}") from None
    path = Path(uri)
    if not path.is_file():
        raise CatalogError(f"{uri}: catalog file does not exist")
    return path.read_bytes()


def load_catalog(uri: str, *, s3_endpoint_url: str | None = None) -> Catalog:
    raw = read_bytes(uri, s3_endpoint_url=s3_endpoint_url)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f"{uri}: not UTF-8 text (invalid byte at offset {exc.start}); save the catalog as UTF-8"
        ) from None
    name = uri.lower()
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        rows = _jsonl_rows(uri, text)
    elif name.endswith(".json"):
        rows = _json_rows(uri, text)
    else:
        rows = _csv_rows(uri, text)
    return _validate(uri, rows)


def _csv_rows(uri: str, text: str) -> list[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise CatalogError(f"{uri}: empty catalog (no header row)")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CatalogError(f"{uri}: missing required column(s): {', '.join(missing)} (line 1)")
    reader.fieldnames = header
    rows: list[tuple[int, dict[str, Any] | str]] = []
    for record in reader:
        line = reader.line_num
        if None in record:  # more cells than header columns
            rows.append((line, f"{len(header) + len(record[None])} cells for {len(header)} columns"))
            continue
        if all((v or "").strip() == "" for v in record.values()):
            continue
        rows.append((line, {k: (v.strip() if isinstance(v, str) else v) for k, v in record.items()}))
    return rows


def _jsonl_rows(uri: str, text: str) -> list[tuple[int, dict[str, Any] | str]]:
    rows: list[tuple[int, dict[str, Any] | str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append((n, f"malformed JSON: {exc.msg} at column {exc.colno}"))
            continue
        rows.append((n, value if isinstance(value, dict) else "row is not a JSON object"))
    return rows


def _json_rows(uri: str, text: str) -> list[tuple[int, dict[str, Any] | str]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{uri}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if isinstance(value, dict) and isinstance(value.get("products"), list):
        value = value["products"]
    if not isinstance(value, list):
        raise CatalogError(f"{uri}: expected a JSON array of products (or {{\"products\": [...]}})")
    # JSON arrays have no line numbers per item; report the 1-based item number instead.
    return [(i, v if isinstance(v, dict) else "item is not a JSON object") for i, v in enumerate(value, 1)]


def _validate(uri: str, rows: list[tuple[int, dict[str, Any] | str]]) -> Catalog:
    products: list[Product] = []
    rejected: list[RowError] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            rejected.append(RowError(source=uri, line=line, reason=row))
            continue
        asin = str(row.get("asin") or "").strip() or None
        try:
            product = _product(row)
        except _FieldError as exc:
            rejected.append(RowError(source=uri, line=line, asin=asin, field=exc.field, reason=exc.reason))
            continue
        key = product.key
        if key in seen:
            rejected.append(RowError(source=uri, line=line, asin=asin, field="asin",
                                     reason=f"duplicate of line {seen[key]} ({key})"))  # fmt: skip
            continue
        seen[key] = line
        products.append(product)
    if not products and not rejected:
        raise CatalogError(f"{uri}: empty catalog (no product rows)")
    return Catalog(source=uri, products=products, rejected=rejected)


class _FieldError(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        self.field, self.reason = field, reason


def _product(row: dict[str, Any]) -> Product:
    for column in REQUIRED_COLUMNS:
        if not str(row.get(column) or "").strip():
            raise _FieldError(column, "is required")
    country = str(row["country_code"]).strip().upper()
    if country not in MARKETPLACES:
        raise _FieldError("country_code", f"unknown marketplace {row['country_code']!r}")
    data = {
        "asin": str(row["asin"]).strip(),
        "country_code": country,
        "title": str(row["title"]).strip(),
        "category": (str(row.get("category") or "").strip() or None),
        "description": (str(row.get("description") or "").strip() or None),
        "image_urls": _images(row),
        "variations": _variations(row.get("variations")),
        "overrides": _overrides(row.get("overrides")),
    }
    for i, url in enumerate(data["image_urls"]):
        if not url.startswith(("http://", "https://")):
            raise _FieldError("image_url" if i == 0 else f"image_url_{i + 1}", f"not an http(s) URL: {url!r}")
    try:
        return Product.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        return _raise(field, err["msg"])


def _raise(field: str | None, reason: str) -> Any:
    raise _FieldError(field, reason)


def _images(row: dict[str, Any]) -> list[str]:
    urls: list[str] = []
    listed = row.get("image_urls")
    if isinstance(listed, list):
        urls.extend(str(u).strip() for u in listed if str(u).strip())
    elif isinstance(listed, str) and listed.strip():
        urls.extend(u.strip() for u in listed.split("|") if u.strip())
    first = str(row.get("image_url") or "").strip()
    if first:
        urls.insert(0, first)
    extra = sorted(
        (k for k in row if k.startswith("image_url_") and k[10:].isdigit()), key=lambda k: int(k[10:])
    )
    urls.extend(str(row[k]).strip() for k in extra if str(row[k] or "").strip())
    return list(dict.fromkeys(urls))


def _variations(value: Any) -> list[Variation]:
    if value in (None, "", []):
        return []
    items: list[dict[str, Any]]
    if isinstance(value, list):
        items = value
    elif isinstance(value, str) and value.strip().startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _FieldError("variations", f"malformed JSON: {exc.msg}") from None
    elif isinstance(value, str):
        items = []
        for part in value.split("|"):
            asin, _, attrs = part.partition(":")
            pairs = dict(a.split("=", 1) for a in attrs.split(";") if "=" in a)
            items.append({"asin": asin.strip(), **{k.strip(): v.strip() for k, v in pairs.items()}})
    else:
        raise _FieldError("variations", "expected a list of child ASINs")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("asin"):
            raise _FieldError(f"variations[{i}]", "each variation needs an 'asin'")
        attrs = item.get("attributes") or {k: v for k, v in item.items() if k != "asin"}
        try:
            out.append(Variation(asin=str(item["asin"]).strip(), attributes={k: str(v) for k, v in attrs.items()}))
        except ValidationError as exc:
            raise _FieldError(f"variations[{i}].asin", exc.errors()[0]["msg"]) from None
    return out


def _overrides(value: Any) -> dict[str, Any]:
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _FieldError("overrides", f"malformed JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise _FieldError("overrides", "expected a JSON object")
    unknown = set(value) - KNOWN_OVERRIDES
    if unknown:
        raise _FieldError("overrides", f"unknown key(s) {sorted(unknown)}; allowed: {sorted(KNOWN_OVERRIDES)}")
    return value
