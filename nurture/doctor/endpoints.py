"""The web side a provider reaches: NURTURE_BASE_URL over https, and the RFC 8058
one-click endpoint answering a POST directly (no redirect, no server error)."""

from __future__ import annotations

import urllib.error
import urllib.request

from nurture.doctor.report import Check, failed, passed
from nurture.settings import Settings

#: Seconds each request may take.
TIMEOUT = 10.0
#: A token no link was ever signed with: the app must answer it itself. Ours answers a
#: bad link with 400 and a page, a real one with 200; both prove the route is served.
PROBE_TOKEN = "doctor-probe"  # noqa: S105 - deliberately invalid, not a secret
#: Answers that show the one-click POST reaches nurture.
_ANSWERED = (200, 400, 410)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a provider follows no redirect: neither do we


_opener = urllib.request.build_opener(_NoRedirect)


def _status(request: urllib.request.Request) -> int | str:
    try:
        with _opener.open(request, timeout=TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"unreachable ({getattr(e, 'reason', e)})"


def check_base_url(settings: Settings) -> Check:
    name = "one-click unsubscribe"
    base = settings.base_url
    if not base.startswith("https://"):
        return failed(name, f"NURTURE_BASE_URL is {base}, not https",
                      "serve nurture behind TLS and set NURTURE_BASE_URL=https://…")  # fmt: skip
    health = _status(urllib.request.Request(f"{base}/healthz"))  # noqa: S310 - https, checked above
    if health != 200:
        return failed(name, f"GET {base}/healthz answered {health}",
                      "check that `nurture serve` runs behind that URL")  # fmt: skip
    post = urllib.request.Request(  # noqa: S310 - https, checked above
        f"{base}/unsubscribe/{PROBE_TOKEN}", data=b"List-Unsubscribe=One-Click", method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    answer = _status(post)
    if answer not in _ANSWERED:
        return failed(name, f"POST {base}/unsubscribe/… answered {answer}",
                      "let POST /unsubscribe/<token> reach nurture with no redirect or login "
                      "(mail providers post to it with no cookie)")  # fmt: skip
    return passed(name, f"{base} is https; POST /unsubscribe/… answered {answer} directly")


def check_postal_address(settings: Settings) -> Check:
    if settings.postal_address:
        return passed("postal address", settings.postal_address)
    return failed("postal address", "NURTURE_POSTAL_ADDRESS is not set",
                  "set it: CAN-SPAM wants a postal address in every email")  # fmt: skip
