"""The report reader of tests/snakemake_report.py on planted pages: it finds every external link a
browser would load or follow, leaves code and inert text alone, and reads the embedded results."""
from __future__ import annotations

import base64
import json

import pytest

from snakemake_report import data_uri_bytes, embedded_json, external_links, links, plain_text

PAGE = """<!doctype html><html><head><style>body{background:url(data:image/png;base64,AAAA)}</style>
<script>var a = '<img src="https://cdn.example/x.png">'; el.href = "https://example.org";</script></head>
<body><svg xmlns="http://www.w3.org/2000/svg"></svg><a href="#results">x</a><img src="data:image/png;base64,AAAA">
<script id="results">
var results = {"reports/t/a.csv": {"caption": "<p>Accuracy of <strong>tiny</strong> &amp; more</p>", "data_uri": "%s"}};
</script></body></html>"""


def _page(uri: str = "data:text/csv;charset=utf8;filename=a.csv;base64," + base64.b64encode(b"a,b\n").decode()) -> str:
    return PAGE % uri


def test_a_self_contained_page_has_no_external_link() -> None:
    page = _page()
    assert external_links(page) == []  # script bodies, the SVG namespace and data: URIs are inert
    assert ("a", "href", "#results") in links(page)
    results = embedded_json(page, "results")
    assert data_uri_bytes(results["reports/t/a.csv"]["data_uri"]) == b"a,b\n"
    assert plain_text(results["reports/t/a.csv"]["caption"]) == "Accuracy of tiny & more"


@pytest.mark.parametrize(
    "planted",
    [
        '<script src="https://cdn.example/react.js"></script>',
        '<link rel="stylesheet" href="http://fonts.example/css">',
        '<img src="//cdn.example/logo.png">',
        '<a href="https://example.org/paper">paper</a>',
        '<div style="background: url(\'https://example.org/bg.png\')"></div>',
        "<style>@import 'https://example.org/x.css';</style>",
        '<iframe src="HTTPS://EXAMPLE.ORG"></iframe>',
    ],
)
def test_every_kind_of_external_link_is_found(planted: str) -> None:
    page = _page().replace("<body>", "<body>" + planted)
    assert len(external_links(page)) == 1, external_links(page)


def test_a_linked_instead_of_embedded_result_is_refused() -> None:
    with pytest.raises(AssertionError, match="not an embedded base64 data URI"):
        data_uri_bytes("data/raw/123/a.csv")
    with pytest.raises(AssertionError, match="has no <script id='rules'>"):
        embedded_json(_page(), "rules")
    # captions are HTML too: a link planted in one is found
    caption = json.loads(json.dumps('<p>see <a href="https://example.org">this</a></p>'))
    assert external_links(caption) == [("a", "href", "https://example.org")]
