"""Reading a Snakemake HTML report (`snakemake --report x.html`, Snakemake 9) in tests: the results it
embeds (path -> caption and data URI) and every link it would load or follow.

The report is one page whose `<script id="results">` holds `var results = {...};` (JSON): per
result its caption (HTML rendered from the rule's .rst) and, in a self-contained report, its file as
a base64 `data:` URI.
"""
from __future__ import annotations

import base64
import html
import json
import re
from html.parser import HTMLParser
from typing import Any

#: Attributes through which a page loads or links another resource.
LINK_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "xlink:href", "background"}
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)  # http://, https://, ftp://, //host (protocol-relative)
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]+)|@import\s+['\"]([^'\"]+)", re.I)


def embedded_json(report: str, script_id: str) -> Any:
    """The JSON value of `<script id="script_id"> var name = VALUE; </script>`."""
    match = re.search(rf'<script id="{re.escape(script_id)}">\s*var \w+ = (.*?);\s*</script>', report, re.S)
    if match is None:
        raise AssertionError(f"the report has no <script id={script_id!r}> with a JSON value")
    return json.loads(match.group(1))


class _Links(HTMLParser):
    """Collects link attributes and CSS url()s of an HTML document. Script bodies are not HTML (the
    parser reads them as raw text), so code is not mistaken for markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name.lower() in LINK_ATTRIBUTES:
                self.links.append((tag, name.lower(), value))
            elif name.lower() == "style":
                self.links += [(tag, "style", url) for url in _css_urls(value)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.links += [("style", "url", url) for url in _css_urls(data)]


def _css_urls(css: str) -> list[str]:
    return [a or b for a, b in _CSS_URL.findall(css)]


def links(document: str) -> list[tuple[str, str, str]]:
    """(tag, attribute, value) of every link in an HTML document or fragment."""
    parser = _Links()
    parser.feed(document)
    parser.close()
    return parser.links


def external_links(document: str) -> list[tuple[str, str, str]]:
    """Links that leave the file: to another host (any scheme with //, or protocol-relative //)."""
    return [link for link in links(document) if _EXTERNAL.match(link[2])]


def data_uri_bytes(uri: str) -> bytes:
    """The content of a base64 `data:` URI (anything else is an error: the report must embed it)."""
    if not uri.startswith("data:") or ";base64," not in uri:
        raise AssertionError(f"not an embedded base64 data URI: {uri[:80]!r}")
    return base64.b64decode(uri.split(";base64,", 1)[1], validate=True)


def plain_text(fragment: str) -> str:
    """An HTML fragment's text, tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())
