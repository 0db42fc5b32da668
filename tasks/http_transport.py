"""One GET against the source API, with retries, timeouts and redaction (source contract, section 1).

Every HTTP answer goes through one method, :meth:`HttpTransport.validate_response`, which sorts it
into *retriable* (retried with exponential backoff and full jitter, bounded per request by
``max_retries`` and per client by ``retry_budget``) or *fatal* (raised at once as a
:class:`SourceError` subclass with a message that says what to fix). The real system answers
429 with ``Retry-After``, 5xx, connection resets, responses that never finish, truncated bodies.

Nothing here loops forever: every sleep is at most ``backoff_max`` seconds, every attempt is
bounded by the connect timeout plus a whole-response deadline, and the number of attempts is
bounded by the retry budget. The token is sent only in the ``Authorization`` header (as the
request's own auth: a ``~/.netrc`` entry for the source's host cannot replace it) and is
scrubbed from every exception message and log line.

Paging over these requests: :class:`tasks.source_api.SourceClient`.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Self
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
import orjson
import requests
import urllib3

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


# --- errors -----------------------------------------------------------------------------------


class SourceError(Exception):
    """The source API could not be read; the message says why (it never contains the token)."""


class SourceAuthError(SourceError):
    """401/403: the token is missing, wrong or lacks rights. Never retried."""


class SourceRequestError(SourceError):
    """400, 404 and other 4xx answers, or a malformed URL: the request itself is wrong. Never retried."""


class SourceResponseError(SourceError):
    """A well-formed JSON answer that breaks the contract (no ``data`` list...). Never retried."""


class SourceUnavailable(SourceError):
    """Retriable failures went on past ``max_retries`` for one request or past the client's
    ``retry_budget``; the message names the URL and the last error."""


class _Retry(Exception):
    """Internal: a retriable failure of one attempt."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


@dataclass
class ClientStats:
    """Counters for the run summary: HTTP attempts, retries (by reason), pages and records read."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    records: int = 0
    slept_seconds: float = 0.0
    by_reason: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict view (JSON-serialisable) for logs and ``dq.run_summary``."""
        return {
            "requests": self.requests,
            "retries": self.retries,
            "pages": self.pages,
            "records": self.records,
            "slept_seconds": round(self.slept_seconds, 3),
            "by_reason": dict(self.by_reason),
        }


# --- transport --------------------------------------------------------------------------------


class _Bearer(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on each request."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "_Bearer(***)"


class HttpTransport:
    """Retrying GET of ``<base_url><path>``, returning the decoded JSON body.

    Args:
        base_url: root of the API, e.g. ``https://dvc.example.gov.vn`` (``DVC_SOURCE_URL``).
        token: bearer token (``DVC_SOURCE_TOKEN``); ``None`` sends no ``Authorization`` header.
        connect_timeout: seconds to open the TCP connection.
        read_timeout: seconds without a byte before an attempt fails, and also the deadline for
            reading one whole response (a server that trickles bytes forever is cut off).
        max_retries: retries of one request before :class:`SourceUnavailable`.
        retry_budget: retries allowed across the client's whole life (the run).
        backoff_base, backoff_max: the n-th retry sleeps ``uniform(0, min(max, base * 2**n))``
            seconds (full jitter); ``Retry-After`` is honoured up to ``backoff_max``.
        session: a ``requests.Session`` to use (the client creates one otherwise).
        sleep: the sleep function (tests inject a recorder).
        rng: random source of the jitter (tests inject a seeded one).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_retries: int = 6,
        retry_budget: int = 500,
        backoff_base: float = 0.5,
        backoff_max: float = 60,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not base_url:
            raise SourceRequestError("no source URL: set DVC_SOURCE_URL")
        if max_retries < 0 or retry_budget < 0:
            raise ValueError("max_retries and retry_budget must be >= 0")
        if connect_timeout <= 0 or read_timeout <= 0 or backoff_max < 0 or backoff_base < 0:
            raise ValueError("timeouts must be > 0 and backoff bounds >= 0")
        self.base_url = base_url.rstrip("/")
        self._token = token or None
        # the request's own auth: requests then never reads ~/.netrc, whose entry for the source's
        # host would replace the token with Basic credentials (and which it looks up per request)
        self._auth = _Bearer(self._token) if self._token else None
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.max_retries = max_retries
        self.retry_budget = retry_budget
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.stats = ClientStats()
        self._bodies = threading.local()  # the body of the last answer get_json decoded, per thread

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._safe_url(self.base_url)!r}, token={'***' if self._token else None})"

    def close(self) -> None:
        """Close the HTTP session if the client created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request, with retries ------------------------------------------------------------

    def get_json(
        self, path: str, params: Mapping[str, str], *, entity: str = "", page: int | None = None,
        outline: msgspec.json.Decoder | None = None,
    ) -> dict[str, Any]:
        """GET ``base_url + path`` and return the decoded body, retrying retriable failures.

        With an ``outline`` (:func:`outline_decoder`), a page body it reads gives ``data`` as
        :class:`PageRecords` (its records decoded when first used), ``total`` and ``page_size``."""
        url = self.base_url + path
        shown = self._safe_url(url + "?" + urlencode(dict(params)))
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(url, params, shown, outline)
            except _Retry as failure:
                self._before_retry(failure, attempt, shown, entity, page)

    def _before_retry(self, failure: _Retry, attempt: int, shown: str, entity: str, page: int | None) -> None:
        """Count the failure, give up if a bound is reached, else log and sleep."""
        self.stats.by_reason[failure.reason] += 1
        last = self._redact(f"{failure.reason}: {failure.detail}")
        if attempt > self.max_retries:
            raise SourceUnavailable(
                f"gave up on {shown} after {attempt} attempts (DVC_HTTP_MAX_RETRIES={self.max_retries}); "
                f"last error: {last}"
            )
        if self.stats.retries >= self.retry_budget:
            raise SourceUnavailable(
                f"retry budget exhausted ({self.stats.retries} retries, DVC_HTTP_RETRY_BUDGET="
                f"{self.retry_budget}) at {shown}; last error: {last}"
            )
        wait = self._backoff(attempt, failure.retry_after)
        self.stats.retries += 1
        self.stats.slept_seconds += wait
        log.warning(
            "source %s page %s: attempt %d/%d failed (%s); retrying in %.2fs",
            entity or "-", page if page is not None else "-", attempt, self.max_retries + 1, last, wait,
        )
        self._sleep(wait)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``attempt``: ``Retry-After`` if given, else full
        jitter over an exponential ceiling; always within ``[0, backoff_max]``."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.backoff_max))
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** min(attempt - 1, 30)))
        return self._rng.uniform(0, ceiling)

    def _attempt(self, url: str, params: Mapping[str, str], shown: str,
                 outline: msgspec.json.Decoder | None = None) -> dict[str, Any]:
        """One HTTP exchange: transport errors become :class:`_Retry` or fatal errors, answers go
        through :meth:`validate_response`."""
        self.stats.requests += 1
        headers = {"Accept": "application/json"}
        started = time.monotonic()
        try:
            response = self._session.get(
                url,
                params=dict(params),
                headers=headers,
                auth=self._auth,
                timeout=(self.connect_timeout, self.read_timeout),
                stream=True,
            )
            try:
                content = self._read_body(response, started + self.connect_timeout + self.read_timeout)
            finally:
                response.close()
        except requests.RequestException as exc:
            raise self._classify_transport_error(exc, shown) from None
        return self.validate_response(response.status_code, response.headers, content, shown, outline)

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        """Read the whole body, cutting off a response still unfinished at ``deadline``.

        ``read1`` returns whatever bytes have arrived, so a server that trickles bytes forever
        is noticed (a plain ``iter_content`` would wait for a full chunk)."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = response.raw.read1(_CHUNK, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError as exc:
                raise _Retry("timeout", _short(exc)) from None
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as exc:
                raise _Retry("truncated", _short(exc)) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise _Retry("connection", _short(exc)) from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise _Retry("timeout", f"response still incomplete after {self.read_timeout:g}s")

    def _classify_transport_error(self, exc: requests.RequestException, shown: str) -> Exception:
        """No answer at all: timeouts and broken connections are retriable, a bad URL is fatal."""
        if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower():
            return _Retry("timeout", _short(exc))
        if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
            return _Retry("truncated", _short(exc))
        if isinstance(exc, requests.ConnectionError):
            return _Retry("connection", _short(exc))
        return SourceRequestError(f"cannot request {shown}: {self._redact(_short(exc))}: check DVC_SOURCE_URL")

    def validate_response(
        self, status: int, headers: Mapping[str, str], content: bytes, url: str,
        outline: msgspec.json.Decoder | None = None,
    ) -> dict[str, Any]:
        """Sort one HTTP answer into success (the decoded body), retriable (raises ``_Retry``) or
        fatal (raises a :class:`SourceError` subclass that is never retried).

        Retriable: 408, 425, 429 (``Retry-After`` honoured), 5xx, a body that is not complete
        JSON. Fatal: 401/403 (token), 404 (URL), 400 and every other 4xx (request), a JSON
        body without a ``data`` list (contract broken). A record of the list that is not an object
        is passed on as ``{"_not_an_object": <value>}``, for the checks to quarantine. With an
        ``outline``, a body it reads is not decoded further here (:class:`PageRecords`).
        """
        if status == 429 or status in _RETRIABLE_STATUS or status >= 500:
            reason = "429" if status == 429 else ("5xx" if status >= 500 else str(status))
            retry_after = _parse_retry_after(headers.get("Retry-After"))
            raise _Retry(reason, f"HTTP {status} {self._redact(_error_text(content))}".strip(), retry_after)
        if status in (401, 403):
            raise SourceAuthError(
                f"the source rejected the token: check DVC_SOURCE_TOKEN (HTTP {status} from {url}"
                f"{self._detail(content)})"
            )
        if status == 404:
            raise SourceRequestError(
                f"{url} was not found (HTTP 404{self._detail(content)}): check DVC_SOURCE_URL"
            )
        if 400 <= status < 500:
            raise SourceRequestError(
                f"the source refused the request {url} (HTTP {status}{self._detail(content)})"
            )
        if not 200 <= status < 300:
            raise SourceResponseError(f"unexpected HTTP {status} from {url}")
        return self._decode_body(content, url, outline)

    def _decode_body(self, content: bytes, url: str, outline: msgspec.json.Decoder | None = None) -> dict[str, Any]:
        if outline is not None:
            try:
                head = outline.decode(content)
            except (msgspec.DecodeError, RecursionError):
                pass  # decoded in full below, which says what is wrong, or wraps records that are not objects
            else:
                self._bodies.last = content
                return {"data": PageRecords(content, head.data), "total": head.total, "page_size": head.page_size}
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            what = "empty body" if not content else f"invalid or truncated JSON ({len(content)} bytes: {exc})"
            raise _Retry("invalid_json", what) from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            shape = f"keys {sorted(body)[:10]}" if isinstance(body, dict) else type(body).__name__
            raise SourceResponseError(f"{url} answered JSON without a 'data' list ({shape}): not the source contract")
        odd = sum(1 for r in body["data"] if not isinstance(r, dict))
        if odd:
            log.warning("%s: %d record(s) of the page are not JSON objects; they will be quarantined", url, odd)
            body["data"] = _objects(body["data"])
        self._bodies.last = content
        return body

    def last_body(self) -> bytes | None:
        """The bytes of the last answer :meth:`get_json` decoded in this thread (its records:
        :func:`page_records`), or None."""
        return getattr(self._bodies, "last", None)

    def _detail(self, content: bytes) -> str:
        text = _error_text(content)
        return f": {self._redact(text)}" if text else ""

    # --- secrets ------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """Remove the token (and any URL user-info) from a text meant for messages or logs."""
        if self._token:
            text = text.replace(self._token, "***")
        return text

    def _safe_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return self._redact(url)


# --- helpers ----------------------------------------------------------------------------------


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


def _error_text(content: bytes) -> str:
    """``error_code: message`` from a contract error body, else a short excerpt of the body."""
    if not content:
        return ""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:200].decode("utf-8", "replace").strip()
    if isinstance(body, dict) and ("message" in body or "error_code" in body):
        code, message = body.get("error_code"), body.get("message")
        return ": ".join(str(p) for p in (code, message) if p)
    return content[:200].decode("utf-8", "replace").strip()


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def _objects(records: list[Any]) -> list[Any]:
    """A broken record must not fail the night: it goes on, wrapped as the normaliser wraps it, and
    is quarantined (it has no key) with what was read."""
    return [r if isinstance(r, dict) else {"_not_an_object": r} for r in records]


def page_records(content: bytes) -> list[dict]:
    """The records of a page body that :meth:`HttpTransport.get_json` accepted, decoded as it
    decodes them (a worker process normalising the page decodes it again by this rule).

    Raises :class:`SourceResponseError` for a body the outline read but that is not JSON orjson
    decodes (a number beyond a double, text that is not UTF-8 in a field the outline skipped)."""
    try:
        records = orjson.loads(content)["data"]
    except orjson.JSONDecodeError as exc:
        raise SourceResponseError(
            f"a page of the source is not valid JSON ({exc}; {len(content)} bytes): nothing of its chunk was "
            "loaded. The source system must fix its export; the run can then be repeated") from None
    return _objects(records) if any(not isinstance(r, dict) for r in records) else records


def outline_decoder(fields: Sequence[str]) -> msgspec.json.Decoder:
    """A decoder of a page body (``{"data": [...], "total": .., "page_size": ..}``) that reads only
    ``fields`` of each record (:data:`msgspec.UNSET` where absent) and skips the rest, ~5x faster
    than decoding the records (``bench/README.md``). It refuses a body whose ``data`` is not a list
    of objects, and invalid or truncated JSON; a body it refuses is decoded in full."""
    record = msgspec.defstruct("RecordOutline", [(f, Any, msgspec.UNSET) for f in fields])
    body = msgspec.defstruct("PageOutline", [("data", list[record]), ("total", Any, None), ("page_size", Any, None)])
    return msgspec.json.Decoder(body)


class PageRecords(Sequence[dict[str, Any]]):
    """The records of a page read through an :func:`outline_decoder`: decoded from the body
    (:func:`page_records`) when first used. A page whose body goes to the normaliser's worker
    process is decoded there only, once; the paging reads :attr:`outline` (the outline's fields
    of each record, in order)."""

    __slots__ = ("_records", "body", "outline")

    def __init__(self, body: bytes, outline: list[Any]) -> None:
        self.body, self.outline = body, outline
        self._records: list[dict[str, Any]] | None = None

    def decoded(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._records = page_records(self.body)
        return self._records

    def __len__(self) -> int:
        return len(self.outline)

    def __getitem__(self, index: Any) -> Any:
        return self.decoded()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.decoded())

    def __repr__(self) -> str:
        return f"PageRecords({len(self.outline)} records, {len(self.body)} bytes)"
