"""The HTML page the OAuth callback answers with.

Everything shown is escaped (the error text comes partly from the authorization server, and
the query string from whoever sent the browser here). On success the page tells the window
that opened it (the console) through `postMessage`, to the daemon's own origin only.
"""

from __future__ import annotations

import html
import json
from urllib.parse import urlsplit

# No scripts but our inline one, no framing, nothing fetched: the page has no need for more.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _script_json(value: object) -> str:
    """JSON that cannot close the script element or open a comment inside it."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def render_callback_page(
    *, ok: bool, title: str, message: str, attempt_id: str | None, origin: str | None
) -> str:
    payload = {
        "type": "palyra.oauth.callback",
        "provider": "openai",
        "state": "succeeded" if ok else "failed",
        "attempt_id": attempt_id,
    }
    script = ""
    if origin:
        script = (
            "<script>(function(){var m="
            + _script_json(payload)
            + ";try{if(window.opener){window.opener.postMessage(m,"
            + _script_json(origin)
            + ");}}catch(e){}})();</script>"
        )
    colour = "#0a7d32" if ok else "#b00020"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>Palyra: {html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:4rem auto;max-width:36rem;"
        f"padding:0 1rem}}h1{{color:{colour}}}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        f"{script}</body></html>"
    )
