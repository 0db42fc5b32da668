"""Client of the provincial one-stop system's API (source contract, section 1): paging.

:class:`SourceClient` reads one entity of the registry (:mod:`tasks.entities`: ``dossiers``,
``payments``, ``procedures``, ``units``) page by page over an ``updated_from``/``updated_to``
window. Each page is one request of :class:`tasks.http_transport.HttpTransport`, which retries
what the real system does (429, 5xx, resets, responses that never finish, truncated bodies) and
raises a :class:`SourceError` subclass, with a message that says what to fix, for the rest.

:func:`window_for` gives the window of an incremental run (with an overlap); a key read twice in
one run is deduplicated by the normaliser (latest ``NgayCapNhat`` wins).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgspec

from tasks.clock import ZONE
from tasks.entities import entity as entity_of
from tasks.http_transport import (
    ClientStats,
    HttpTransport,
    PageRecords,
    SourceAuthError,
    SourceError,
    SourceRequestError,
    SourceResponseError,
    SourceUnavailable,
    outline_decoder,
)

if TYPE_CHECKING:
    from tasks.settings import Settings

__all__ = [
    "MAX_PAGE_SIZE", "ClientStats", "Page", "SourceAuthError", "SourceClient", "SourceError", "SourceRequestError",
    "SourceResponseError", "SourceUnavailable", "format_timestamp", "window_for",
]

TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Page:
    """One page of records as the API returned it.

    ``page`` and ``total`` are those of the request that returned it, whose ``updated_from``
    (``yyyyMMddHHmmss``, or None) is ``updated_from``: with seek paging a run resumes from there.
    """

    entity: str
    page: int
    total: int | None
    #: a list, or :class:`tasks.http_transport.PageRecords`: decoded from ``body`` when first used
    records: Sequence[dict[str, Any]]
    page_size: int
    updated_from: str | None = None
    #: the body as the source sent it (None from a client that does not keep it): a worker process
    #: normalises the page from these bytes (tasks.normalize_pool)
    body: bytes | None = field(default=None, repr=False)


class SourceClient(HttpTransport):
    """Paged, retrying reader of ``<base_url>/api/v1/<entity>``.

    Args:
        base_url: root of the API, e.g. ``https://dvc.example.gov.vn`` (``DVC_SOURCE_URL``).
        token: bearer token (``DVC_SOURCE_TOKEN``); ``None`` sends no ``Authorization`` header.
        page_size: records per page, 1..1000.
        http: timeouts, retry bounds and test hooks of :class:`tasks.http_transport.HttpTransport`
            (``connect_timeout``, ``read_timeout``, ``max_retries``, ``retry_budget``,
            ``backoff_base``, ``backoff_max``, ``session``, ``sleep``, ``rng``).
    """

    def __init__(self, base_url: str, token: str | None, *, page_size: int = 500, **http: Any) -> None:
        super().__init__(base_url, token, **http)
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        self.page_size = page_size

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
        re-reads the few records sharing the boundary timestamp instead (the normaliser keeps the
        latest version of each key); when a whole page shares one timestamp it falls back to the
        next page number. Records without a readable ``NgayCapNhat`` (catalogues) are paged by number.
        ``start_page`` applies to the first request only.
        """
        ent = entity_of(entity)
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
            self._bodies.last = None
            body = self.get_json(ent.endpoint, params, entity=entity, page=page_no, outline=_outline(ent.key))
            page = self._page_from_body(entity, page_no, body, cursor, raw=self.last_body())
            keys = _fingerprints(page.records, ent.key)
            if page.records and keys == previous_keys:
                raise SourceResponseError(
                    f"{self._safe_url(self.base_url)}{ent.endpoint} returned the same records twice in a row "
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

    def _page_from_body(self, entity: str, page_no: int, body: dict[str, Any], cursor: str | None,
                        raw: bytes | None = None) -> Page:
        records = body["data"]
        total = _lenient_int(body.get("total"))
        served_size = _lenient_int(body.get("page_size"))
        page_size = served_size if served_size and 0 < served_size <= self.page_size else self.page_size
        return Page(entity=entity, page=page_no, total=total, records=records, page_size=page_size,
                    updated_from=cursor, body=raw)


# --- helpers ----------------------------------------------------------------------------------


def format_timestamp(value: datetime) -> str:
    """``yyyyMMddHHmmss`` in the source's local time; aware datetimes are converted to it first."""
    if value.tzinfo is not None:
        value = value.astimezone(ZONE).replace(tzinfo=None)  # the source speaks local time
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


@cache
def _outline(key: tuple[str, ...]) -> msgspec.json.Decoder:
    """The outline of a page the paging reads: each record's key fields and ``NgayCapNhat``."""
    return outline_decoder([*key, "NgayCapNhat"])


def _seek_cursor(records: Sequence[dict[str, Any]]) -> str | None:
    """``NgayCapNhat`` of the page's last record, to seek to; None when the page cannot be sought
    past (a timestamp absent or unreadable, or one timestamp shared by the whole page)."""
    if not records:
        return None
    if isinstance(records, PageRecords):
        first, last = (_timestamp_of(r.NgayCapNhat) for r in (records.outline[0], records.outline[-1]))
    else:
        first, last = _timestamp(records[0]), _timestamp(records[-1])
    if first is None or last is None or first == last:
        return None
    return last


def _timestamp(record: dict[str, Any]) -> str | None:
    return _timestamp_of(record.get("NgayCapNhat"))


def _timestamp_of(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) == 14 and value.isdigit():
        return value
    return None


def _fingerprints(records: Sequence[dict[str, Any]], key: tuple[str, ...]) -> list[Any]:
    """:func:`_record_fingerprint` of each record; from the outline of a :class:`PageRecords` whose
    records all have their key (absent fields there are ``UNSET`` instead of None: the same on
    every outlined page)."""
    if isinstance(records, PageRecords) and all(getattr(r, key[0]) is not msgspec.UNSET for r in records.outline):
        return list(map(attrgetter(*key, "NgayCapNhat"), records.outline))
    return [_record_fingerprint(r, key) for r in records]


def _record_fingerprint(record: dict[str, Any], key: tuple[str, ...]) -> Any:
    """What identifies a record of a page, to notice a server that serves the same page twice:
    its key fields (``key``, from the registry) and ``NgayCapNhat``; its whole content when it
    lacks the key."""
    if key[0] in record:
        return (*(record.get(f) for f in key), record.get("NgayCapNhat"))
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
