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

from providers.contract import MARKETPLACES, STEPS, Product, Variation

REQUIRED_COLUMNS = ("asin", "country_code", "title")
KNOWN_OVERRIDES = {"steps", "providers", *(s.options_field for s in STEPS)}


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
    lines: dict[str, int] = {}
    """Product key -> the line its row starts on, for errors found after reading (pre-flight)."""

    def reject(self, product: Product, reason: str, field: str | None = None) -> RowError:
        """A row error for a product that was read but cannot run, in the catalog's own format."""
        return RowError(
            source=self.source,
            line=self.lines.get(product.key, 0),
            asin=product.asin,
            field=field,
            reason=reason,
        )


def read_bytes(uri: str, *, s3_endpoint_url: str | None = None) -> bytes:
    if uri.startswith("s3://"):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = uri[5:].partition("/")
        try:
            obj = boto3.client("s3", endpoint_url=s3_endpoint_url).get_object(Bucket=bucket, Key=key)
            body: bytes = obj["Body"].read()
            return body
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
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise CatalogError(
            f"{uri}:{line}: not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at line {line} "
            f"column {column}); save the catalog as UTF-8"
        ) from None
    name = uri.lower()
    if name.endswith((".jsonl", ".ndjson")):
        rows = _jsonl_rows(uri, text)
    elif name.endswith(".json"):
        rows = _json_rows(uri, text)
    else:
        rows = _csv_rows(uri, text)
    return _validate(uri, rows)


def _csv_rows(uri: str, text: str) -> list[tuple[int, _Row]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if not any(header):
        raise CatalogError(f"{uri}: empty catalog (no header row)")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CatalogError(
            f"{uri}:1: missing required column(s): {', '.join(missing)} (header: {', '.join(header)})"
        )
    reader.fieldnames = header
    lines = text.splitlines()
    rows: list[tuple[int, _Row]] = []
    end = reader.line_num
    for record in reader:
        # line_num is where the record *ends* (quoted cells may span lines): report where it starts.
        line = end + 1
        while line < reader.line_num and not lines[line - 1].strip():
            line += 1
        end = reader.line_num
        if None in record:  # more cells than header columns
            asin = str(record.get("asin") or "").strip() or None
            rows.append(
                (
                    line,
                    _RowProblem(
                        f"column {len(header) + 1}",
                        f"{len(header) + len(record[None])} cells for {len(header)} columns "
                        "(an unquoted comma?)",
                        asin,
                    ),
                )
            )
            continue
        if all((v or "").strip() == "" for v in record.values()):
            continue
        rows.append((line, {k: (v.strip() if isinstance(v, str) else v) for k, v in record.items()}))
    return rows


class _RowProblem:
    """A row that cannot be read at all, with the field (or column) to look at."""

    def __init__(self, field: str | None, reason: str, asin: str | None = None) -> None:
        self.field, self.reason, self.asin = field, reason, asin


# one catalog row as read: its cells, a reason it is not a row, or a problem naming the column
_Row = dict[str, Any] | str | _RowProblem


def _jsonl_rows(uri: str, text: str) -> list[tuple[int, _Row]]:
    rows: list[tuple[int, _Row]] = []
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


def _json_rows(uri: str, text: str) -> list[tuple[int, _Row]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{uri}:{exc.lineno}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if isinstance(value, dict) and isinstance(value.get("products"), list):
        value = value["products"]
    if not isinstance(value, list):
        raise CatalogError(f'{uri}: expected a JSON array of products (or {{"products": [...]}})')
    lines = _item_lines(text, len(value))
    return [
        (line, v if isinstance(v, dict) else f"item {i} is not a JSON object")
        for i, (line, v) in enumerate(zip(lines, value, strict=True), 1)
    ]


def _item_lines(text: str, count: int) -> list[int]:
    """The line on which each item of the product array starts (the top-level array, or the value of
    a top-level ``"products"`` key); item numbers stand in if the text cannot be walked."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n\ufeff":
            i += 1
        return i

    def array_at(i: int) -> list[int]:
        starts: list[int] = []
        i = skip(i + 1)
        while i < len(text) and text[i] != "]":
            starts.append(i)
            _, i = decoder.raw_decode(text, i)
            i = skip(i)
            if i < len(text) and text[i] == ",":
                i = skip(i + 1)
        return _line_numbers(text, starts)

    try:
        i = skip(0)
        if text[i] == "[":
            found = array_at(i)
        else:  # {"products": [...], ...}
            found, i = [], skip(i + 1)
            while text[i] != "}":
                key, i = decoder.raw_decode(text, i)
                i = skip(skip(i) + 1)  # past ':'
                if key == "products" and text[i] == "[":
                    found = array_at(i)
                _, i = decoder.raw_decode(text, i)
                i = skip(i)
                if text[i] == ",":
                    i = skip(i + 1)
        if len(found) == count:
            return found
    except (ValueError, IndexError):
        pass
    return list(range(1, count + 1))


def _line_numbers(text: str, offsets: list[int]) -> list[int]:
    """The 1-based line of each of the ascending ``offsets``, in one pass over the text: counting
    from the start for every item made reading a JSON catalog quadratic (20,000 items: 168 s)."""
    lines, line, previous = [], 1, 0
    for offset in offsets:
        line += text.count("\n", previous, offset)
        previous = offset
        lines.append(line)
    return lines


def _validate(uri: str, rows: list[tuple[int, _Row]]) -> Catalog:
    products: list[Product] = []
    rejected: list[RowError] = []
    seen: dict[str, int] = {}
    children: dict[str, int] = {}  # country/child ASIN -> line of the row that owns it
    for line, row in rows:
        if isinstance(row, _RowProblem):
            rejected.append(
                RowError(source=uri, line=line, asin=row.asin, field=row.field, reason=row.reason)
            )
            continue
        if isinstance(row, str):
            rejected.append(RowError(source=uri, line=line, field="row", reason=row))
            continue
        asin = str(row.get("asin") or "").strip() or None
        try:
            product = _product(row)
            for i, variation in enumerate(product.variations):
                owner = children.get(f"{product.country_code}/{variation.asin}")
                if owner is not None:
                    # its Scale outputs would land on the same archive keys as the other row's
                    raise _FieldError(
                        f"variations[{i}].asin",
                        f"{variation.asin} is already a variation of the product on line {owner}",
                    )
        except _FieldError as exc:
            rejected.append(RowError(source=uri, line=line, asin=asin, field=exc.field, reason=exc.reason))
            continue
        key = product.key
        if key in seen:
            rejected.append(
                RowError(
                    source=uri,
                    line=line,
                    asin=asin,
                    field="asin",
                    reason=f"duplicate of line {seen[key]} ({key})",
                )
            )
            continue
        seen[key] = line
        for variation in product.variations:
            children[f"{product.country_code}/{variation.asin}"] = line
        products.append(product)
    if not products and not rejected:
        raise CatalogError(f"{uri}: empty catalog (no product rows)")
    return Catalog(source=uri, products=products, rejected=rejected, lines=seen)


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
    asin = str(row["asin"]).strip().upper()  # ASINs are case-insensitive: one product, one archive key
    if not asin.isascii() or not asin.isalnum() or not 5 <= len(asin) <= 15:
        raise _FieldError(
            "asin",
            f"invalid ASIN {str(row['asin']).strip()!r}: 5-15 letters and digits "
            "(Amazon ASINs are 10, e.g. B0CHX1W1XY)",
        )
    variations = _variations(row.get("variations"))
    for i, variation in enumerate(variations):
        if variation.asin == asin:
            raise _FieldError(f"variations[{i}].asin", f"{variation.asin} is the product's own ASIN")
        if any(v.asin == variation.asin for v in variations[:i]):
            raise _FieldError(f"variations[{i}].asin", f"{variation.asin} is listed twice")
    images = _images(row)
    data = {
        "asin": asin,
        "country_code": country,
        "title": str(row["title"]).strip(),
        "category": (str(row.get("category") or "").strip() or None),
        "description": (str(row.get("description") or "").strip() or None),
        "image_urls": images,
        "variations": variations,
        "overrides": _overrides(row.get("overrides")),
    }
    for i, url in enumerate(images):
        if not url.startswith(("http://", "https://")):
            raise _FieldError("image_url" if i == 0 else f"image_url_{i + 1}", f"not an http(s) URL: {url!r}")
    try:
        return Product.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise _FieldError(field, err["msg"]) from None


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
    items: list[Any]  # from JSON: checked item by item below
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
            asin, _, attr_text = part.partition(":")
            pairs = dict(a.split("=", 1) for a in attr_text.split(";") if "=" in a)
            items.append({"asin": asin.strip(), **{k.strip(): v.strip() for k, v in pairs.items()}})
    else:
        raise _FieldError("variations", "expected a list of child ASINs")
    out: list[Variation] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not item.get("asin"):
            raise _FieldError(f"variations[{i}]", "each variation needs an 'asin'")
        attrs = item.get("attributes") or {k: v for k, v in item.items() if k != "asin"}
        if not isinstance(attrs, dict):
            raise _FieldError(f"variations[{i}].attributes", "expected an object of attribute: value")
        try:
            out.append(
                Variation(
                    asin=str(item["asin"]).strip().upper(),
                    attributes={str(k): str(v) for k, v in attrs.items()},
                )
            )
        except ValidationError as exc:
            raise _FieldError(
                f"variations[{i}].asin", f"invalid ASIN {str(item['asin'])!r}: {exc.errors()[0]['msg']}"
            ) from None
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
        raise _FieldError(
            "overrides", f"unknown key(s) {sorted(unknown)}; allowed: {sorted(KNOWN_OVERRIDES)}"
        )
    for key, model in _OVERRIDE_MODELS.items():
        if key not in value:
            continue
        try:
            # checked on its own; rules that span the run's parameters (e.g. Scale 'language' mode
            # needs a language) are checked when the row runs, before anything is submitted
            model.validate_python(value[key])
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise _FieldError(f"overrides.{key}" + (f".{where}" if where else ""), err["msg"]) from None
    return value


def _override_models() -> dict[str, Any]:
    from pydantic import TypeAdapter

    from providers.contract import Step

    from .params import StepProviders

    return {
        "steps": TypeAdapter(list[Step]),
        "providers": TypeAdapter(StepProviders),
        **{s.options_field: TypeAdapter(s.options_model) for s in STEPS},
    }


_OVERRIDE_MODELS = _override_models()
