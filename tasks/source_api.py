"""HTTP client for the provincial one-stop system's API (source-contract.md, section 1).

The client reads one entity (``dossiers``, ``payments``, ``procedures``, ``units``) page by
page over an ``updated_from``/``updated_to`` window and survives what the real system does:
429 with ``Retry-After``, 5xx, connection resets, responses that never finish, truncated
bodies. Every HTTP answer goes through one method, :meth:`SourceClient.validate_response`,
which sorts it into *retriable* (retried with exponential backoff and full jitter, bounded per
request by ``max_retries`` and per client by ``retry_budget``) or *fatal* (raised at once as a
:class:`SourceError` subclass with a message that says what to fix).

Nothing here loops forever: every sleep is at most ``backoff_max`` seconds, every attempt is
bounded by the connect timeout plus a whole-response deadline, and the number of attempts is
bounded by the retry budget. The token is sent only in the ``Authorization`` header and is
scrubbed from every exception message and log line.

Pure helpers for the flows: :func:`dedupe_latest` (a key read twice in one run keeps its
latest version) and :func:`window_for` (incremental window with an overlap).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import orjson
import requests
import urllib3

if TYPE_CHECKING:
    from tasks.settings import Settings

log = logging.getLogger(__name__)

ENTITIES: tuple[str, ...] = ("dossiers", "payments", "procedures", "units")
"""Entities served under ``/api/v1/<entity>``."""

TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
SOURCE_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
MAX_PAGE_SIZE = 1000
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


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of records as the API returned it.

    ``page`` and ``total`` are those of the request that returned it, whose ``updated_from``
    (``yyyyMMddHHmmss``, or None) is ``updated_from``: with seek paging a run resumes from there.
    """

    entity: str
    page: int
    total: int | None
    records: list[dict[str, Any]]
    page_size: int
    updated_from: str | None = None


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


# --- client -----------------------------------------------------------------------------------


class SourceClient:
    """Paged, retrying reader of ``<base_url>/api/v1/<entity>``.

    Args:
        base_url: root of the API, e.g. ``https://dvc.example.gov.vn`` (``DVC_SOURCE_URL``).
        token: bearer token (``DVC_SOURCE_TOKEN``); ``None`` sends no ``Authorization`` header.
        page_size: records per page, 1..1000.
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
        page_size: int = 500,
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
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        if max_retries < 0 or retry_budget < 0:
            raise ValueError("max_retries and retry_budget must be >= 0")
        if connect_timeout <= 0 or read_timeout <= 0 or backoff_max < 0 or backoff_base < 0:
            raise ValueError("timeouts must be > 0 and backoff bounds >= 0")
        self.base_url = base_url.rstrip("/")
        self._token = token or None
        self.page_size = page_size
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

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> SourceClient:
        """Build a client from :class:`tasks.settings.Settings` (``DVC_SOURCE_URL``, ``DVC_SOURCE_TOKEN``,
        ``DVC_PAGE_SIZE``, ``DVC_HTTP_*``); keyword ``overrides`` win (tests pass ``sleep=``)."""
        if not settings.source_url:
            raise SourceRequestError("no source URL: set DVC_SOURCE_URL")
        token = settings.source_token.get_secret_value() if settings.source_token else None
        kwargs: dict[str, Any] = {
            "page_size": settings.page_size,
            "connect_timeout": settings.http_connect_timeout,
            "read_timeout": settings.http_read_timeout,
            "max_retries": settings.http_max_retries,
            "retry_budget": settings.http_retry_budget,
            "backoff_max": settings.http_backoff_max,
        }
        kwargs.update(overrides)
        return cls(settings.source_url, token, **kwargs)

    def __repr__(self) -> str:
        return f"SourceClient({self._safe_url(self.base_url)!r}, token={'***' if self._token else None})"

    def close(self) -> None:
        """Close the HTTP session if the client created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> SourceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- paging -------------------------------------------------------------------------------

    def iter_pages(
        self,
        entity: str,
        updated_from: datetime | None = None,
        updated_to: datetime | None = None,
        start_page: int = 1,
        *,
        seek: bool = True,
    ) -> Iterator[Page]:
        """Yield the pages of ``entity`` changed in ``[updated_from, updated_to)``.

        Stops after a page shorter than the page size, or once ``page * page_size >= total``
        (``total`` as reported by the latest page, so a total that changes while paging is
        followed). The page size the server reports wins over the one requested, so a server
        that caps it does not end the read early. Records are yielded as the API sent them.

        With ``seek`` (default), the next request starts at the ``NgayCapNhat`` of the last record
        read (``updated_from`` is inclusive, page 1) instead of asking for the next page number.
        Offset paging loses records when the source updates records while they are being read:
        an already-read record that is updated moves to the end, every record after it shifts
        one place back, and the one on the page boundary lands on a page already read. Seeking
        re-reads the few records sharing the boundary timestamp instead (:func:`dedupe_latest`
        drops them); when a whole page shares one timestamp it falls back to the next page
        number. Records without a readable ``NgayCapNhat`` (catalogues) are paged by number.
        ``start_page`` applies to the first request only.
        """
        if entity not in ENTITIES:
            raise ValueError(f"unknown entity {entity!r}; expected one of {', '.join(ENTITIES)}")
        if start_page < 1:
            raise ValueError("start_page is 1-based")
        cursor = format_timestamp(updated_from) if updated_from is not None else None
        until = format_timestamp(updated_to) if updated_to is not None else None
        page_no = start_page
        previous_keys: list[Any] | None = None
        while True:
            params = {"updated_from": cursor, "updated_to": until, "page": str(page_no),
                      "page_size": str(self.page_size)}
            params = {k: v for k, v in params.items() if v is not None}
            body = self.get_json(f"/api/v1/{entity}", params, entity=entity, page=page_no)
            page = self._page_from_body(entity, page_no, body, cursor)
            keys = [_record_fingerprint(r) for r in page.records]
            if page.records and keys == previous_keys:
                raise SourceResponseError(
                    f"{self._safe_url(self.base_url)}/api/v1/{entity} returned the same records twice in a row "
                    f"(page {page_no}, updated_from={cursor}): the server seems to ignore the paging parameters"
                )
            previous_keys = keys
            self.stats.pages += 1
            self.stats.records += len(page.records)
            yield page
            if self._is_last_page(page):
                return
            next_cursor = _seek_cursor(page.records) if seek else None
            if next_cursor is not None and (cursor is None or next_cursor > cursor):
                cursor, page_no = next_cursor, 1
            else:
                page_no += 1

    def iter_records(
        self,
        entity: str,
        updated_from: datetime | None = None,
        updated_to: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every record of every page (see :meth:`iter_pages`), not yet deduplicated."""
        for page in self.iter_pages(entity, updated_from, updated_to):
            yield from page.records

    @staticmethod
    def _is_last_page(page: Page) -> bool:
        if len(page.records) < page.page_size:
            return True
        return page.total is not None and page.page * page.page_size >= page.total

    def _page_from_body(self, entity: str, page_no: int, body: dict[str, Any], cursor: str | None) -> Page:
        records = body["data"]
        total = _lenient_int(body.get("total"))
        served_size = _lenient_int(body.get("page_size"))
        page_size = served_size if served_size and 0 < served_size <= self.page_size else self.page_size
        return Page(entity=entity, page=page_no, total=total, records=records, page_size=page_size,
                    updated_from=cursor)

    # --- one request, with retries ------------------------------------------------------------

    def get_json(
        self, path: str, params: Mapping[str, str], *, entity: str = "", page: int | None = None
    ) -> dict[str, Any]:
        """GET ``base_url + path`` and return the decoded body, retrying retriable failures."""
        url = self.base_url + path
        shown = self._safe_url(url + "?" + urlencode(dict(params)))
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(url, params, shown)
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

    def _attempt(self, url: str, params: Mapping[str, str], shown: str) -> dict[str, Any]:
        """One HTTP exchange: transport errors become :class:`_Retry` or fatal errors, answers go
        through :meth:`validate_response`."""
        self.stats.requests += 1
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        started = time.monotonic()
        try:
            response = self._session.get(
                url,
                params=dict(params),
                headers=headers,
                timeout=(self.connect_timeout, self.read_timeout),
                stream=True,
            )
            try:
                content = self._read_body(response, started + self.connect_timeout + self.read_timeout)
            finally:
                response.close()
        except requests.RequestException as exc:
            raise self._classify_transport_error(exc, shown) from None
        return self.validate_response(response.status_code, response.headers, content, shown)

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
        self, status: int, headers: Mapping[str, str], content: bytes, url: str
    ) -> dict[str, Any]:
        """Sort one HTTP answer into success (the decoded body), retriable (raises ``_Retry``) or
        fatal (raises a :class:`SourceError` subclass that is never retried).

        Retriable: 408, 425, 429 (``Retry-After`` honoured), 5xx, a body that is not complete
        JSON. Fatal: 401/403 (token), 404 (URL), 400 and every other 4xx (request), a JSON
        body without a ``data`` list (contract broken). A record of the list that is not an object
        is passed on as ``{"_not_an_object": <value>}``, for the checks to quarantine.
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
        return self._decode_body(content, url)

    def _decode_body(self, content: bytes, url: str) -> dict[str, Any]:
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
            # a broken record must not fail the night: it goes on, wrapped as the normaliser wraps it,
            # and is quarantined (it has no key) with what was read
            log.warning("%s: %d record(s) of the page are not JSON objects; they will be quarantined", url, odd)
            body["data"] = [r if isinstance(r, dict) else {"_not_an_object": r} for r in body["data"]]
        return body

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


def format_timestamp(value: datetime) -> str:
    """``yyyyMMddHHmmss`` in the source's local time; aware datetimes are converted to Asia/Ho_Chi_Minh."""
    if value.tzinfo is not None:
        value = value.astimezone(SOURCE_TZ).replace(tzinfo=None)
    return value.strftime(TIMESTAMP_FORMAT)


def window_for(
    watermark: datetime | None, overlap_minutes: int, until: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """The ``(updated_from, updated_to)`` window of an incremental run.

    ``updated_from`` is the stored watermark minus ``overlap_minutes`` (records updated while the
    previous run was paging are read again and deduplicated); ``None`` (first run) reads from the
    beginning. ``updated_to`` is ``until`` (exclusive), ``None`` for "up to now".
    """
    if overlap_minutes < 0:
        raise ValueError("overlap_minutes must be >= 0")
    start = None if watermark is None else watermark - timedelta(minutes=overlap_minutes)
    if start is not None and until is not None and start >= until:
        raise ValueError(f"empty window: from {start:%Y-%m-%d %H:%M:%S} is not before until {until:%Y-%m-%d %H:%M:%S}")
    return start, until


def dedupe_latest(
    records: Iterable[dict[str, Any]],
    key: str | tuple[str, ...],
    updated_field: str = "NgayCapNhat",
) -> tuple[list[dict[str, Any]], int]:
    """Keep, per key, the record with the latest ``updated_field`` (ties: the last one seen).

    Returns ``(records, dropped)``. Records keep the position of their key's first appearance.
    Timestamps compare as ``yyyyMMddHHmmss`` strings (numbers are compared by their digits); an
    empty or missing timestamp is older than any other. Records with a missing or empty key are
    never merged with each other: they are all kept, for the checks to quarantine. O(n).
    """
    best: dict[Any, tuple[str, dict[str, Any]]] = {}
    keyless: list[tuple[int, dict[str, Any]]] = []
    order: dict[Any, int] = {}
    seen = 0
    get_key = _key_getter(key)
    for position, record in enumerate(records):
        seen += 1
        k = get_key(record)
        if k is None:
            keyless.append((position, record))
            continue
        stamp = record.get(updated_field)
        stamp = "" if stamp is None else str(stamp)
        current = best.get(k)
        if current is None:
            order[k] = position
            best[k] = (stamp, record)
        elif stamp >= current[0]:
            best[k] = (stamp, record)
    kept = [rec for _, rec in best.values()]
    if keyless:
        merged = sorted(
            [(order[k], rec) for k, (_, rec) in best.items()] + keyless, key=lambda item: item[0]
        )
        kept = [rec for _, rec in merged]
    return kept, seen - len(kept)


def _key_getter(key: str | tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    if isinstance(key, str):
        def single(record: dict[str, Any]) -> Any:
            value = record.get(key)
            return None if value is None or value == "" else value
        return single
    fields = tuple(key)

    def composite(record: dict[str, Any]) -> Any:
        values = tuple(record.get(f) for f in fields)
        return None if any(v is None or v == "" for v in values) else values
    return composite


def _seek_cursor(records: list[dict[str, Any]]) -> str | None:
    """``NgayCapNhat`` of the page's last record, to seek to; None when the page cannot be sought
    past (a timestamp absent or unreadable, or one timestamp shared by the whole page)."""
    if not records:
        return None
    first, last = _timestamp(records[0]), _timestamp(records[-1])
    if first is None or last is None or first == last:
        return None
    return last


def _timestamp(record: dict[str, Any]) -> str | None:
    value = record.get("NgayCapNhat")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) == 14 and value.isdigit():
        return value
    return None


def _record_fingerprint(record: dict[str, Any]) -> Any:
    for name in ("MaHoSo", "Ma", "MaTTHC", "MaDonVi"):
        if name in record:
            return (name, record.get(name), record.get("NgayCapNhat"), record.get("HieuLucTu"))
    return tuple(sorted((k, repr(v)) for k, v in record.items()))


def _lenient_int(value: Any) -> int | None:
    """JSON number or numeric string -> int; anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


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
