"""Bad input: catalogs, run parameters and archive keys.

A bad row becomes a rejection naming file, line and field, and is never submitted; a catalog that
cannot be read at all is refused with a message saying where; invalid parameter combinations are
refused before any provider request. Catalog tests need no Prefect; the flow-level ones do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flows.archive import LocalArchive, output_key, product_manifest_key, run_key, safe
from flows.catalog import CatalogError, RowError, load_catalog

HEADER = "asin,country_code,title,category,description,image_url,variations,overrides\n"
GOOD = "B0CHX1W1XY,US,Water Bottle,Sports,Keeps drinks cold,https://img.example.com/b.jpg,,\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def rejected(catalog: Any) -> dict[int, RowError]:
    return {r.line: r for r in catalog.rejected}


# ---- the file as a whole ----------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(CatalogError, match=r"nope\.csv: catalog file does not exist"):
        load_catalog(missing)


def test_missing_required_columns_name_them_and_line_1(tmp_path: Path) -> None:
    uri = write(tmp_path, "c.csv", "asin,title\nB0CHX1W1XY,Bottle\n")
    with pytest.raises(CatalogError) as info:
        load_catalog(uri)
    assert str(info.value).startswith(
        f"{uri}:1: missing required column(s): country_code (header: asin, title)"
    )


def test_header_is_case_and_space_insensitive(tmp_path: Path) -> None:
    uri = write(tmp_path, "c.csv", " ASIN , Country_Code ,Title\nB0CHX1W1XY,us,Bottle\n")
    catalog = load_catalog(uri)
    assert [p.key for p in catalog.products] == ["US/B0CHX1W1XY"]


@pytest.mark.parametrize("text", ["", HEADER, HEADER + "\n,,,,,,,\n\n"])
def test_empty_catalog_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(CatalogError, match="empty catalog"):
        load_catalog(write(tmp_path, "c.csv", text))


def test_latin1_file_is_refused_naming_line_and_column(tmp_path: Path) -> None:
    uri = write(tmp_path, "c.csv", (HEADER + "B0CHX1W1XY,FR,Théière en fonte,,,,,\n").encode("latin-1"))
    with pytest.raises(CatalogError) as info:
        load_catalog(uri)
    message = str(info.value)
    assert message.startswith(f"{uri}:2:")
    assert "not UTF-8" in message and "line 2 column 17" in message and "0xe9" in message


def test_utf8_with_bom_and_non_ascii_titles_is_fine(tmp_path: Path) -> None:
    uri = write(tmp_path, "c.csv", "\ufeff" + HEADER + "B0CHX1W1XY,FR,Théière en fonte,,,,,\n")
    assert load_catalog(uri).products[0].title == "Théière en fonte"


def test_malformed_json_file_names_line_and_column(tmp_path: Path) -> None:
    uri = write(tmp_path, "c.json", '[\n  {"asin": "B0CHX1W1XY", "country_code": "US" "title": "x"}\n]')
    with pytest.raises(CatalogError, match=r"c\.json:2: malformed JSON at line 2 column 47"):
        load_catalog(uri)


def test_json_that_is_not_a_list_of_products_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="expected a JSON array of products"):
        load_catalog(write(tmp_path, "c.json", '{"items": []}'))


# ---- rows: each rejection names file, line and field, and the good rows still load ------------------


def test_each_bad_csv_row_is_rejected_with_file_line_and_field(tmp_path: Path) -> None:
    text = (
        HEADER
        + GOOD  # line 2
        + 'B0BQRG7K5N,US,Matcha,Grocery,"multi\nline\ndescription",,,\n'  # lines 3-5
        + "B0-BAD-ASIN,US,Bad asin,,,,,\n"  # line 6
        + "B0D1LMN8QR,XX,Unknown marketplace,,,,,\n"  # line 7
        + "B0CHX1W1XY,US,Duplicate,,,,,\n"  # line 8
        + "b0chx1w1xy,US,Duplicate in lower case,,,,,\n"  # line 9
        + "B0B5TYH3JK,CA,,,,,,\n"  # line 10: no title
        + "B09V3KXJPB,GB,Board,Home,too,many,cells,here,!\n"  # line 11
        + "B0C7WZ9F2M,DE,Chair,,,ftp://img.example.com/c.jpg,,\n"  # line 12
        + "B0C7WZ9F9Z,DE,Stool,,,,,{not json\n"  # line 13
    )
    uri = write(tmp_path, "catalog.csv", text)
    catalog = load_catalog(uri)
    assert [p.key for p in catalog.products] == ["US/B0CHX1W1XY", "US/B0BQRG7K5N"]
    bad = rejected(catalog)
    assert set(bad) == {6, 7, 8, 9, 10, 11, 12, 13}
    expect_field = {
        6: "asin",
        7: "country_code",
        8: "asin",
        9: "asin",
        10: "title",
        11: "column 9",
        12: "image_url",
        13: "overrides",
    }
    for line, field in expect_field.items():
        assert bad[line].field == field, bad[line]
        assert str(bad[line]).startswith(f"{uri}:{line} "), str(bad[line])
        assert f"field '{field}'" in str(bad[line])
    assert "unknown marketplace 'XX'" in bad[7].reason
    assert "duplicate of line 2" in bad[8].reason and "duplicate of line 2" in bad[9].reason
    assert "B0-BAD-ASIN" in bad[6].reason
    assert "9 cells for 8 columns" in bad[11].reason and bad[11].asin == "B09V3KXJPB"


@pytest.mark.parametrize(
    "asin", ["B0-1234567", "B0 CHX1W1X", "B0CH", "../../etc", "B0CHX1W1XYZZZZZZ", "B0CHX1W1X\u00e9"]
)
def test_invalid_asins_are_rejected(tmp_path: Path, asin: str) -> None:
    uri = write(tmp_path, "c.jsonl", json.dumps({"asin": asin, "country_code": "US", "title": "x"}) + "\n")
    catalog = load_catalog(uri)
    assert catalog.products == []
    assert catalog.rejected[0].field == "asin" and catalog.rejected[0].line == 1


def test_asins_are_normalized_to_upper_case(tmp_path: Path) -> None:
    uri = write(tmp_path, "c.csv", HEADER + "b0chx1w1xy,us,Bottle,,,,b0chx1w2aa:color=Blue,\n")
    product = load_catalog(uri).products[0]
    assert (product.key, product.variations[0].asin) == ("US/B0CHX1W1XY", "B0CHX1W2AA")


def test_jsonl_rows_report_their_own_line(tmp_path: Path) -> None:
    lines = [
        json.dumps({"asin": "B0CHX1W1XY", "country_code": "US", "title": "Bottle"}),
        "",
        '{"asin": "B0BQRG7K5N", "country_code": "US"',
        json.dumps(["not", "an", "object"]),
        json.dumps(
            {
                "asin": "B0D1LMN8QR",
                "country_code": "US",
                "title": "Pad",
                "image_urls": ["https://x.example.com/a.jpg", "javascript:alert(1)"],
            }
        ),
    ]
    uri = write(tmp_path, "c.jsonl", "\n".join(lines) + "\n")
    catalog = load_catalog(uri)
    assert [p.asin for p in catalog.products] == ["B0CHX1W1XY"]
    bad = rejected(catalog)
    assert set(bad) == {3, 4, 5}
    assert "malformed JSON" in bad[3].reason
    assert bad[5].field == "image_url_2"


def test_json_items_report_the_line_they_start_on(tmp_path: Path) -> None:
    text = """{"exported_by": "pim", "meta": {"rows": [1, 2]},
 "products": [
  {"asin": "B0CHX1W1XY", "country_code": "US", "title": "Bottle"},
  {"asin": "B0BQRG7K5N",
   "country_code": "ZZ", "title": "Matcha"},
  "not an object",
  {"asin": "B0CHX1W1XY", "country_code": "US", "title": "Again"}
 ]}"""
    uri = write(tmp_path, "c.json", text)
    catalog = load_catalog(uri)
    bad = rejected(catalog)
    assert set(bad) == {4, 6, 7}
    assert bad[4].field == "country_code" and bad[4].asin == "B0BQRG7K5N"
    assert "duplicate of line 3" in bad[7].reason
    plain = write(
        tmp_path, "p.json", json.dumps([{"asin": "B0CHX1W1XY", "country_code": "US", "title": "x"}])
    )
    assert [p.asin for p in load_catalog(plain).products] == ["B0CHX1W1XY"]


# ---- variations and overrides -------------------------------------------------------------------------


def test_variations_in_both_formats_are_parsed(tmp_path: Path) -> None:
    compact = "B0CHX1W2AA:color=Ocean Blue|B0CHX1W3BB:color=Forest Green;size=L"
    as_json = json.dumps(
        [{"asin": "B0C7WZ9F3N", "color": "Black"}, {"asin": "B0C7WZ9F4P", "attributes": {"size": "M"}}]
    )
    text = (
        HEADER
        + f'B0CHX1W1XY,US,Bottle,,,,"{compact}",\n'
        + "B0C7WZ9F2M,DE,Chair,,,,"
        + '"'
        + as_json.replace('"', '""')
        + '"'
        + ",\n"
    )
    catalog = load_catalog(write(tmp_path, "c.csv", text))
    got = {p.asin: [(v.asin, v.attributes) for v in p.variations] for p in catalog.products}
    assert got == {
        "B0CHX1W1XY": [
            ("B0CHX1W2AA", {"color": "Ocean Blue"}),
            ("B0CHX1W3BB", {"color": "Forest Green", "size": "L"}),
        ],
        "B0C7WZ9F2M": [("B0C7WZ9F3N", {"color": "Black"}), ("B0C7WZ9F4P", {"size": "M"})],
    }


@pytest.mark.parametrize(
    ("variations", "field", "reason"),
    [
        ("B0CHX1W2AA:color=Blue|B0-X:color=Red", "variations[1].asin", "invalid ASIN"),
        ("B0CHX1W2AA:color=Blue|B0CHX1W2AA:color=Red", "variations[1].asin", "listed twice"),
        ("B0CHX1W1XY:color=Blue", "variations[0].asin", "own ASIN"),
        ('[{"color": "Blue"}]', "variations[0]", "needs an 'asin'"),
        ('[{"asin": "B0CHX1W2AA"', "variations", "malformed JSON"),
    ],
)
def test_bad_variations_name_the_item(tmp_path: Path, variations: str, field: str, reason: str) -> None:
    row = f'B0CHX1W1XY,US,Bottle,,,,"{variations.replace(chr(34), chr(34) * 2)}",\n'
    catalog = load_catalog(write(tmp_path, "c.csv", HEADER + row))
    assert catalog.products == []
    assert (catalog.rejected[0].line, catalog.rejected[0].field) == (2, field)
    assert reason in catalog.rejected[0].reason


def test_a_child_asin_claimed_by_two_products_is_rejected(tmp_path: Path) -> None:
    """Both parents' Scale outputs would land on the same archive keys."""
    text = (
        HEADER
        + 'B0CHX1W1XY,US,Bottle,,,,"B0CHX1W2AA:color=Blue",\n'
        + 'B0CHX1W9ZZ,US,Bottle v2,,,,"B0CHX1W3BB:color=Red|B0CHX1W2AA:color=Blue",\n'
        + 'B0CHX1W8YY,DE,Bottle DE,,,,"B0CHX1W2AA:color=Blue",\n'
    )  # another marketplace: fine
    catalog = load_catalog(write(tmp_path, "c.csv", text))
    assert [p.key for p in catalog.products] == ["US/B0CHX1W1XY", "DE/B0CHX1W8YY"]
    bad = catalog.rejected[0]
    assert (bad.line, bad.field) == (3, "variations[1].asin") and "line 2" in bad.reason


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ('{"colour": 1}', "overrides"),
        ("[1, 2]", "overrides"),
        ('{"image_options": {"size": 999}}', "overrides.image_options.size"),
        ('{"steps": ["copy", "video"]}', "overrides.steps.1"),
        ('{"aplus_options": {"types": ["A+ Basic", "A+ Basic"]}}', "overrides.aplus_options.types"),
        ('{"providers": {"images": "pixii", "video": "x"}}', "overrides.providers.video"),
    ],
)
def test_overrides_are_validated_with_the_field_named(tmp_path: Path, overrides: str, field: str) -> None:
    row = f'B0CHX1W1XY,US,Bottle,,,,,"{overrides.replace(chr(34), chr(34) * 2)}"\n'
    catalog = load_catalog(write(tmp_path, "c.csv", HEADER + row))
    assert catalog.products == [], catalog.products
    assert (catalog.rejected[0].line, catalog.rejected[0].field) == (2, field)


def test_valid_overrides_are_kept(tmp_path: Path) -> None:
    overrides = {
        "image_options": {"styles": ["white_bg", "lifestyle"]},
        "steps": ["copy", "images"],
        "scale_options": {"mode": "language"},
    }  # the language may come from the run: checked then
    row = json.dumps({"asin": "B0CHX1W1XY", "country_code": "US", "title": "x", "overrides": overrides})
    assert load_catalog(write(tmp_path, "c.jsonl", row)).products[0].overrides == overrides


# ---- s3:// catalogs ---------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto import mock_aws

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        import boto3

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="catalogs")
        yield s3


def test_catalog_from_s3(aws: Any) -> None:
    aws.put_object(
        Bucket="catalogs", Key="in/catalog.csv", Body=(HEADER + GOOD + "B0-BAD,US,x,,,,,\n").encode()
    )
    catalog = load_catalog("s3://catalogs/in/catalog.csv")
    assert [p.key for p in catalog.products] == ["US/B0CHX1W1XY"]
    assert str(catalog.rejected[0]).startswith("s3://catalogs/in/catalog.csv:3 ")
    with pytest.raises(CatalogError, match=r"s3://catalogs/in/missing\.csv: cannot read catalog"):
        load_catalog("s3://catalogs/in/missing.csv")


# ---- archive keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["..", ".", "", "../../etc/passwd", "a/../../b", "/abs", "x\\..\\y", "a\x00b", "~root"]
)
def test_key_segments_never_traverse(raw: str, tmp_path: Path) -> None:
    part = safe(raw)
    assert part and "/" not in part and "\\" not in part and part not in (".", "..")
    key = output_key("pre/fix", "US", raw, raw, "pixii", raw, "png")
    assert key.startswith("pre/fix/US/") and ".." not in key.split("/")
    archive = LocalArchive(tmp_path / "archive")
    stored = archive.put(key, b"x", content_type="text/plain", metadata={})
    assert Path(stored.uri).resolve().is_relative_to((tmp_path / "archive").resolve())
    with pytest.raises(ValueError, match="escapes the archive"):
        archive.put("../outside.txt", b"x", content_type="text/plain", metadata={})


def test_distinct_products_never_share_keys(tmp_path: Path) -> None:
    """Every valid (country, ASIN) maps to its own folder, even ASINs differing only in case in the
    catalog (normalized) and across marketplaces."""
    rows = ["B0CHX1W1XY,US,a", "B0CHX1W1XZ,US,b", "B0CHX1W1XY,GB,c", "b0chx1w1xz,GB,d", "B0CHX1W1X,US,e"]
    catalog = load_catalog(write(tmp_path, "c.csv", "asin,country_code,title\n" + "\n".join(rows) + "\n"))
    keys = {}
    for p in catalog.products:
        for step in ("copy", "images", "aplus", "scale"):
            for key in (
                output_key("p", p.country_code, p.asin, step, "pixii", "image-1", "png"),
                product_manifest_key("p", p.country_code, p.asin),
            ):
                assert keys.setdefault(key.lower(), p.key) == p.key, (
                    key,
                    p.key,
                )  # case-insensitive filesystems too
    assert len(catalog.products) == 5
    assert run_key("p", "../run", "manifest.json") == "p/runs/run/manifest.json"


# ---- flow level: nothing is submitted for invalid rows or invalid parameters ------------------------


def _requests(sandboxes: dict[str, Any]) -> int:
    return sum(len(box.requests) for box in sandboxes.values())


@pytest.mark.usefixtures("prefect_server")
async def test_invalid_rows_are_never_submitted(sandboxes: dict[str, Any], lf_env: dict[str, Any]) -> None:
    from .helpers import run_flow

    text = HEADER + GOOD + "B0BQRG7K5N,XX,Matcha,,,,,\n" + "B0-BAD,US,Bad,,,,,\n"
    uri = write(lf_env["tmp"], "catalog.csv", text)
    _, summary = await run_flow(catalog=uri, steps=["copy"])
    assert [p.asin for p in summary.products] == ["B0CHX1W1XY"]
    assert summary.products[0].status == "complete", summary.failure_report()
    assert {(r.line, r.field) for r in summary.rejected_rows} == {(3, "country_code"), (4, "asin")}
    assert "2 rejected rows" in summary.headline()
    report = "\n".join(summary.failure_report())
    assert f"{uri}:3 (asin B0BQRG7K5N) field 'country_code'" in report
    # the sandbox only ever saw the good product
    assert {p["title"] for p in sandboxes["listingrva"].products.values()} == {"Water Bottle"}
    assert len(sandboxes["listingrva"].jobs) == 1
    run_manifest = json.loads((lf_env["archive"] / "runs" / summary.run_id / "manifest.json").read_text())
    assert {r["line"] for r in run_manifest["rejected_rows"]} == {3, 4}


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"scale_options": {"mode": "language"}}, "scale_options.language is required"),
        ({"providers": {"copy": "pixii"}}, "'pixii' does not implement copy"),
        ({"providers": {"images": "nonexistent"}}, "provider 'nonexistent' is unavailable"),
        ({"steps": ["images"], "force": ["copy"]}, "force names steps that are not run"),
    ],
)
async def test_invalid_parameters_are_refused_before_any_request(
    sandboxes: dict[str, Any], lf_env: dict[str, Any], params: dict[str, Any], message: str
) -> None:
    from flows.catalog_flow import catalog_flow

    from .helpers import EXAMPLE

    state = await catalog_flow(catalog=EXAMPLE, **params, return_state=True)
    assert state.is_failed()
    assert message in (state.message or "") or message in repr(await _exception(state))
    assert _requests(sandboxes) == 0


async def _exception(state: Any) -> BaseException | None:
    try:
        await state.aresult()
    except BaseException as exc:  # noqa: BLE001 - the flow's own error
        return exc
    return None


@pytest.mark.usefixtures("prefect_server")
async def test_invalid_per_row_override_rejects_that_row_before_any_request(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    from .helpers import run_flow

    override = '"{""scale_options"": {""mode"": ""language""}}"'
    text = (
        HEADER
        + GOOD
        + f'B0BQRG7K5N,US,Matcha,,,https://img.example.com/m.jpg,"B0BQRG7K6P:color=x",{override}\n'
    )
    uri = write(lf_env["tmp"], "catalog.csv", text)
    _, summary = await run_flow(catalog=uri, steps=["copy", "scale"])
    assert [p.asin for p in summary.products] == ["B0CHX1W1XY"]
    [row] = summary.rejected_rows  # by pre-flight, with the catalog's own row format
    assert str(row).startswith(f"{uri}:3 (asin B0BQRG7K5N) field 'overrides': invalid overrides: "), row
    assert "scale_options.language is required" in str(row)
    assert not sandboxes["pixii"].jobs
    assert all("Matcha" not in json.dumps(p) for p in sandboxes["listingrva"].products.values())


@pytest.mark.usefixtures("prefect_server")
async def test_two_image_styles_of_one_product_never_share_keys(
    sandboxes: dict[str, Any], lf_env: dict[str, Any]
) -> None:
    from .helpers import archived_outputs, run_flow

    state, summary = await run_flow(
        products=["B0BQRG7K5N"],
        steps=["images"],
        providers={"images": "pixii"},
        image_options={"styles": ["amazon_listing", "amazon_main_images"]},
    )
    assert state.is_completed(), summary.failure_report()
    outputs = archived_outputs(lf_env["archive"], summary.products[0].manifest_key, "images")
    assert (
        len(outputs) == summary.products[0].steps["images"].output_count == 5 + 2
    )  # amazon_listing: 5, amazon_main_images: 2
    assert len({o["key"] for o in outputs}) == len(outputs), sorted(o["key"] for o in outputs)
    assert len(list((lf_env["archive"] / "US" / "B0BQRG7K5N" / "images").glob("*.png"))) == len(outputs)
