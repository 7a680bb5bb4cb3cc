"""`validate --check-links`: ask each linked URL whether it still answers.

A HEAD request per URL (a GET where a server refuses HEAD), following redirects, with
a timeout, several at once. A dead link is a warning, never an error: a site that is
down for a minute should not block a release.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from urllib.error import HTTPError, URLError
from urllib.request import HTTPRedirectHandler, Request, build_opener

#: Seconds to wait for each URL to answer.
TIMEOUT = 5.0
#: URLs asked at once.
WORKERS = 8
_AGENT = "nurture-validate (link check)"


class _KeepMethod(HTTPRedirectHandler):
    """urllib turns a redirected HEAD into a GET; keep it a HEAD."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.method = req.get_method()
        return new


def probe(url: str, timeout: float = TIMEOUT) -> str | None:
    """What is wrong with a URL ('answered 404 Not Found', 'could not be reached …'),
    or None when it answers with a success after any redirects."""
    opener = build_opener(_KeepMethod)
    for method in ("HEAD", "GET"):
        request = Request(url, method=method, headers={"User-Agent": _AGENT})  # noqa: S310
        try:
            with opener.open(request, timeout=timeout):  # noqa: S310 - http(s) only, checked by lints.py
                return None
        except HTTPError as e:
            if method == "HEAD" and e.code in (405, 501):
                continue  # a server that does not do HEAD: ask again with GET
            return f"answered {e.code} {e.reason}"
        except (URLError, OSError, ValueError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            return f"could not be reached ({reason})"
    return None


def probe_all(urls: Iterable[str], timeout: float = TIMEOUT) -> dict[str, str]:
    """{url: problem} for every URL that does not answer well."""
    unique = sorted(set(urls))
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = pool.map(lambda u: probe(u, timeout), unique)
        return {url: problem for url, problem in zip(unique, results, strict=True) if problem}
