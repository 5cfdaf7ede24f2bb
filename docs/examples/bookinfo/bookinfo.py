# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The example application's four services (Python standard library only), one per process.

    bookinfo.py productpage --port 9080 --site a   # calls details and reviews by name
    bookinfo.py details     --port 9080 --site b
    bookinfo.py reviews     --port 9081 --site b --version v1   # v1: no ratings
    bookinfo.py reviews     --port 9082 --site b --version v2   # v2, v3: call ratings by name
    bookinfo.py ratings     --port 9080 --site a

Every service listens on ``--bind`` (default 127.0.0.1: only its own host reaches it; other
sites reach it through a ClusterLink export) and answers JSON naming itself and its site. The
product page calls ``http://details.clusterlink.internal:9080/`` and
``http://reviews.clusterlink.internal:9080/`` (ClusterLink imports, by their DNS names), the
reviews v2 and v3 ``http://ratings.clusterlink.internal:9080/``. A dependency that fails is
reported in the answer instead of failing the page, as a real front end would.
``GET /`` of the product page is one line of text (for people and the demo);
``GET /api`` the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOOK = {"id": 0, "title": "The Comedy of Errors", "author": "William Shakespeare"}
DETAILS = {"type": "paperback", "pages": 200, "publisher": "PublisherA", "language": "English"}
REVIEWS = [
    {"reviewer": "Reviewer1", "text": "An extremely entertaining play by Shakespeare."},
    {"reviewer": "Reviewer2", "text": "Absolutely fun and entertaining."},
]
RATINGS = {"Reviewer1": 5, "Reviewer2": 4}
TIMEOUT = float(os.environ.get("BOOKINFO_TIMEOUT", "10"))


def fetch(url: str) -> dict[str, Any]:
    """GET ``url`` (a new connection each time) as JSON, or ``{"error": ...}``."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return json.loads(resp.read())
    except Exception as exc:  # any failure of a dependency is shown, not raised
        return {"error": f"{type(exc).__name__}: {exc}"}


def answer(args: argparse.Namespace) -> dict[str, Any]:
    """What the service ``args.service`` says for one request."""
    me = {"service": args.service, "site": args.site}
    if args.service == "details":
        return {**me, **BOOK, **DETAILS}
    if args.service == "ratings":
        return {**me, "ratings": RATINGS}
    if args.service == "reviews":
        reviews = [dict(r) for r in REVIEWS]
        out: dict[str, Any] = {**me, "version": args.version, "reviews": reviews}
        if args.version != "v1":  # v2 black stars, v3 red stars (as upstream's BookInfo)
            ratings = fetch(args.ratings_url)
            out["ratings"] = ratings
            for r in reviews:
                r["stars"] = ratings.get("ratings", {}).get(r["reviewer"])
                r["color"] = "black" if args.version == "v2" else "red"
        return out
    return {**me, **BOOK, "details": fetch(args.details_url), "reviews": fetch(args.reviews_url)}


def summary(page: dict[str, Any]) -> str:
    """The product page as one line: who answered each part, from which site."""

    def who(part: dict[str, Any]) -> str:
        if "error" in part:
            return f"unavailable ({part['error']})"
        name = part["service"] + (f"-{part['version']}" if part.get("version") else "")
        return f"{name}@{part['site']}"

    details, reviews = page["details"], page["reviews"]
    text = f"productpage@{page['site']} | details: {who(details)} | reviews: {who(reviews)}"
    if "ratings" in reviews:
        ratings = reviews["ratings"]
        stars = ",".join(str(r.get("stars")) for r in reviews["reviews"])
        text += f" stars {stars} ({reviews['reviews'][0]['color']}) from {who(ratings)}"
    return text


class Handler(BaseHTTPRequestHandler):
    args: argparse.Namespace
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/health"):
            self._send(200, "text/plain", b"ok\n")
            return
        data = answer(self.args)
        if self.args.service == "productpage" and not self.path.startswith("/api"):
            self._send(200, "text/plain; charset=utf-8", (summary(data) + "\n").encode())
        else:
            self._send(200, "application/json", json.dumps(data).encode() + b"\n")

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would flood the journal


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("service", choices=["productpage", "details", "reviews", "ratings"])
    p.add_argument("--port", type=int, default=9080)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--site", default=os.uname().nodename)
    p.add_argument("--version", default="v1", choices=["v1", "v2", "v3"])
    p.add_argument("--details-url", default="http://details.clusterlink.internal:9080/")
    p.add_argument("--reviews-url", default="http://reviews.clusterlink.internal:9080/")
    p.add_argument("--ratings-url", default="http://ratings.clusterlink.internal:9080/")
    args = p.parse_args(argv)
    Handler.args = args
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
