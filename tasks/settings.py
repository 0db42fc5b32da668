"""Every setting of dvc-etl, in one typed place.

Values come from environment variables prefixed ``DVC_`` (``DVC_WAREHOUSE_URL``...), or from a
``.env`` file in the working directory. Each field's description is the one the README lists;
``tests/test_settings.py`` checks that the README names every setting.

Secrets (``source_token``, ``smtp_password``, ``hash_key``) are ``SecretStr``: they print as
``**********`` in logs, reprs and exception messages.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The source checkout's root (tests and dev tools read the repository's files through it); an
#: installed package never needs it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shipped_dir(name: str) -> Path:
    """A data folder shipped with dvc-etl (``sql``, ``expectations``, ``reference``): in an installed
    wheel it is package data (``tasks/shipped/<name>/``, mapped from the repository's top-level
    folder by pyproject.toml); in a source checkout it is that top-level folder. Never the working
    directory."""
    packaged = Path(__file__).resolve().parent / "shipped" / name
    return packaged if packaged.is_dir() else PROJECT_ROOT / name


SQL_DIR = shipped_dir("sql")
EXPECTATIONS_DIR = shipped_dir("expectations")
REFERENCE_DIR = shipped_dir("reference")
#: A memory size as DuckDB's memory_limit takes it (case-insensitive): 512MB, 2GB, 1.5GiB...
MEMORY_SIZE = r"\d+(\.\d+)?\s*([KMGT]i?B|[KMGT]|B|bytes)"


def _unset(description: str) -> Any:
    """A setting that is None unless set (its description says what unset means)."""
    return Field(None, description=description)


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error's text never echoes the input (a model-level error
    # would show every setting, the warehouse URL's password included); the CLI still names the bad
    # value of a non-secret setting from ``errors()``
    model_config = SettingsConfigDict(env_prefix="DVC_", env_file=".env", extra="ignore",
                                      hide_input_in_errors=True)

    # --- source -------------------------------------------------------------------------------
    source_url: str | None = Field(
        None,
        description="Base URL of the provincial one-stop system's API (e.g. https://dvc.example.gov.vn). "
        "Unset: `dvc-etl run` refuses to start; `make run` / `dvc-etl demo` start the built-in simulator.",
    )
    source_token: SecretStr | None = Field(None, description="Bearer token for the source API (secret).")
    allow_insecure_http: bool = Field(
        False,
        description="Allow an `http://` DVC_SOURCE_URL on a host other than loopback (127.0.0.0/8, ::1, "
        "localhost): the bearer token and the applicants' data would cross the network in clear. Default "
        "false: such a URL is refused (use https://).",
    )
    source_name: str = Field(
        "default",
        description="Name of the source system (one per province or system). Keys watermarks and rows, "
        "so several sources can share one warehouse.",
    )
    page_size: int = Field(500, ge=1, le=1000, description="Records requested per API page (1..1000).")
    http_connect_timeout: float = Field(10.0, description="Seconds to wait for a TCP connection to the API.")
    http_read_timeout: float = Field(60.0, description="Seconds to wait for an API response before retrying.")
    http_max_retries: int = Field(6, description="Retries of one API request before the run fails.")
    http_retry_budget: int = Field(
        500, description="Total retries allowed across a whole run; past it the run fails instead of hammering."
    )
    http_backoff_max: float = Field(60.0, description="Upper bound, in seconds, of one backoff sleep.")
    overlap_minutes: int = Field(
        60,
        description="Incremental windows start this many minutes before the stored watermark, to catch "
        "records updated while the previous run read its pages.",
    )
    batch_days: int = Field(
        31,
        ge=1,
        description="Catch-up after downtime extracts at most this many days of changes per batch; each batch "
        "is loaded and commits its watermark before the next one is read.",
    )
    lock_wait_seconds: float = Field(
        1800.0,
        ge=0,
        description="How long a run waits for the warehouse's writer lock while another run (another source, "
        "a backfill) writes; past it the run fails with 'warehouse busy' (exit code 4). 0 fails at once.",
    )

    chunk_records: int = Field(
        15_000,
        ge=100,
        description="Records normalised, checked and loaded per transaction. Bounds the run's memory "
        "(roughly 25 MB per 1,000 dossiers in flight); larger chunks commit less often.",
    )
    normalize_workers: int = Field(
        1, ge=0, le=4,
        description="Worker processes that normalise an extraction's chunks while the run checks and loads the "
        "previous one (both cores busy), for extractions of more than one chunk; 0: normalise in the run's own "
        "process. Chunks go to the workers in turn; more than one only helps with more than 2 cores. A nightly of one chunk never starts them.",
    )

    # --- files and folders --------------------------------------------------------------------
    warehouse_url: str = Field(
        "duckdb:///data/dvc.duckdb",
        description="SQLAlchemy URL of the warehouse: embedded DuckDB file (default) or "
        "postgresql+psycopg://user@host:5432/db.",
    )
    duckdb_memory_limit: str = Field(
        "384MB",
        pattern=rf"(?i)^(\s*|{MEMORY_SIZE})$",
        description="Memory limit of the embedded DuckDB warehouse (DuckDB's `memory_limit`, e.g. `512MB`, "
        "`2GB`); bigger work spills to `<file>.tmp/`. The default keeps a run over a million dossiers "
        "under 1 GiB, and one over 5M at about 1 GiB (the run's process; the core tables have no key "
        "indexes on DuckDB, which it could not evict). Empty: DuckDB's default, 80 % of the machine's RAM. "
        "Ignored for PostgreSQL.",
    )
    analyst_duckdb: Path | None = _unset(
        "Path of the analysts' read-only DuckDB copy of `mart` and the non-personal `core` views, replaced "
        "atomically after each publication; unset: `<warehouse file stem>-analyst.duckdb` beside a DuckDB "
        "warehouse (`data/dvc-analyst.duckdb`). None with a PostgreSQL warehouse (analysts use their role "
        "and the views)."
    )
    landing_dir: Path | None = _unset(
        "Landing folder of a DuckDB warehouse's raw layer: each load batch's raw records as a Parquet file, "
        "`raw.<entity>` a view over the committed ones (`tasks/landing.py`); unset or empty: "
        "`<warehouse file stem>-landing/` beside the DuckDB file (`data/dvc-landing/`). Part of the "
        "warehouse: back it up with the file. Ignored for PostgreSQL (raw tables)."
    )
    reports_dir: Path = Field(Path("reports"), description="Where workbooks and data docs are written.")
    data_docs_keep_runs: int = Field(
        30, ge=0,
        description="Runs kept in the data-docs site (`<DVC_REPORTS_DIR>/data-docs/`, whose `index.html` lists "
        "them newest first); older run folders are deleted when a run writes its data docs. 0 keeps every run.",
    )
    data_docs_url: str | None = Field(
        None,
        description="Base URL under which a web server publishes `<DVC_REPORTS_DIR>/data-docs/`: alerts and "
        "summaries link to `<base>/<run id>/index.html`. Unset: they give the page's file path.",
    )
    reference_dir: Path = Field(
        REFERENCE_DIR,
        description="Folder with simplifications.csv, delegations.csv and calendar_overrides.csv "
        "(default: the shipped reference/).",
    )
    inbox_dir: Path = Field(
        Path("inbox"),
        description="Folder where clerks drop Excel/CSV exports; processed files move to processed/, "
        "unreadable ones to failed/.",
    )
    # limits of one clerk's file (tasks/source_files.FileLimits, tasks/file_guard): past one, the file
    # goes to failed/ with a reason naming the setting, and the other files go on
    file_max_bytes: int = Field(
        100 * 2**20, ge=1, description="Largest clerk's file (.xlsx, .xls, HTML or CSV) read, in bytes (default 100 MiB)."
    )
    file_max_unpacked_bytes: int = Field(
        512 * 2**20, ge=1,
        description="Largest total unpacked size of an .xlsx (a zip), in bytes (default 512 MiB): refuses zip bombs.",
    )
    file_max_rows: int = Field(
        100_000, ge=1, description="Most rows (the last row number) a sheet or CSV may have."
    )
    file_max_columns: int = Field(
        256, ge=1,
        description="Rightmost column that may hold a value; empty formatted cells further right (a row "
        "padded to column XFD) cost nothing and are ignored.",
    )
    file_max_cell_chars: int = Field(
        32_767, ge=1, description="Longest text of one cell (Excel's own limit is 32,767 characters)."
    )
    file_parse_memory_mb: int = Field(
        1024, ge=64,
        description="Address-space limit (RLIMIT_AS), in MiB, of the child process that parses one file.",
    )
    file_parse_timeout: float = Field(
        600.0, gt=0, description="Seconds the child process may spend parsing one file before it is killed."
    )

    # --- data quality and alerts --------------------------------------------------------------
    critical_threshold: int = Field(
        0,
        description="A run whose critical check failures (quarantined rows) exceed this count does not "
        "publish reports; the previous publication stays.",
    )
    warning_alert_threshold: int = Field(
        100, description="Warnings above this count in one run send an alert."
    )
    freshness_days: int = Field(3, description="Warn when no new dossier arrived for this many days.")
    gx_row_budget: int = Field(
        30_000, ge=0,
        description="Rows of each entity per run that Great Expectations (the record of the checks, not the "
        "gate) validates in full, chunk by chunk: the default covers every row of a nightly run (a night of "
        "10,000 changes reads some 15,000 dossiers); beyond them "
        "(a backfill, a full refresh) it validates a deterministic sample (DVC_GX_SAMPLE_FRACTION). 0: no "
        "budget, GX validates every row. The checks read every row regardless.",
    )
    gx_sample_fraction: float = Field(
        0.02, gt=0, le=1,
        description="Share of the rows beyond DVC_GX_ROW_BUDGET that Great Expectations validates: the rows "
        "whose record key hashes below it, so a rerun samples the same rows.",
    )
    alert_webhook_url: str | None = Field(
        None, description="Slack-compatible incoming webhook that receives alerts (JSON with a `text`)."
    )
    smtp_host: str | None = Field(None, description="SMTP server for alert e-mails; unset disables e-mail.")
    smtp_port: int = Field(25, description="SMTP port.")
    smtp_user: str | None = Field(None, description="SMTP login, if the server needs one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (secret).")
    smtp_starttls: bool | None = Field(
        None,
        description="STARTTLS on the SMTP connection (certificate verified). Unset: on, unless DVC_SMTP_HOST is "
        "loopback (127.0.0.0/8, ::1, localhost); true or false forces it. A server that cannot STARTTLS "
        "then gets no mail rather than mail in clear.",
    )
    smtp_from: str = Field("dvc-etl@localhost", description="Sender address of alert e-mails.")
    alert_email_to: str | None = Field(None, description="Comma-separated recipients of alert e-mails.")

    # --- reports ------------------------------------------------------------------------------
    unpaid_threshold_days: int = Field(
        30,
        description="Days after the result after which an unpaid result is flagged in "
        "mart.rpt_unpaid_results (per-procedure overrides in reference/unpaid_thresholds.csv).",
    )

    office_name: str | None = _unset(
        "The reporting office named at the top of every workbook sheet (e.g. 'UBND huyện Tuy "
        "Phước'); unset: the highest-level unit in the report."
    )
    period_cut: Literal["calendar", "decree-09"] = Field(
        "calendar",
        description="How `dvc-etl report --period` and the scheduled monthly report cut periods: `calendar` "
        "(calendar month, quarter, half, year) or `decree-09` (Decree 09/2019/NĐ-CP data cut: a month runs "
        "from the 15th of the previous month to the 14th; a year from 15 December to 14 December).",
    )
    report_number: str | None = _unset(
        "The report a workbook is attached to, written after 'Kèm theo Báo cáo số ' at the top of "
        "every sheet (e.g. '340/BC-UBND ngày 15/6/2024'); unset: no such line."
    )
    report_place: str | None = _unset(
        "The place in the workbook's signature line '<place>, ngày dd tháng mm năm yyyy' (e.g. "
        "'Tuy Phước'); unset: the date without a place."
    )

    # --- personal data ------------------------------------------------------------------------
    hash_key: SecretStr = Field(
        SecretStr("dvc-etl-dev-key-change-me"),
        description="Key of the keyed hash (HMAC-SHA256) that replaces applicant IDs in core; set a "
        "private value in production (secret).",
    )
    quarantine_raw_retention_days: int = Field(
        90,
        ge=0,
        description="Retention (Decree 13/2023/NĐ-CP storage limitation) of the record kept with a quarantined "
        "row (`dq.quarantine.raw_record`, personal data as read): set to NULL once the row is resolved, and "
        "in any case this many days after the record was last read; the reason and the key stay. Applied at "
        "the end of every nightly run and by `dvc-etl db purge`. 0: cleared at the next purge.",
    )
    raw_retention_days: int = Field(
        180,
        ge=0,
        description="Retention (Decree 13/2023/NĐ-CP storage limitation) of the superseded record versions in "
        "`raw.<entity>` (personal data as extracted): versions loaded more than this many days ago are deleted, "
        "except the latest version of each key, which is always kept. Applied at the end of every nightly run "
        "and by `dvc-etl db purge`. 0: every superseded version is deleted at the next purge.",
    )

    # --- analysts' role (dvc-etl db grant-analyst) --------------------------------------------
    analyst_password: SecretStr | None = _unset(
        "Password `dvc-etl db grant-analyst` gives the analyst role (secret); unset: the command "
        "prompts for it, or reads it with --password-stdin (never a command-line argument)."
    )

    # --- secrets from Prefect Secret blocks ---------------------------------------------------
    source_token_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the source token, read when DVC_SOURCE_TOKEN "
        "is unset.")
    smtp_password_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the SMTP password, read when DVC_SMTP_PASSWORD "
        "is unset.")
    hash_key_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the hash key, read when DVC_HASH_KEY is unset.")

    @field_validator("period_cut", mode="before")
    @classmethod
    def _cut_case(cls, value: object) -> object:
        """`Decree-09 ` is `decree-09`; anything else is refused naming the accepted values."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("landing_dir", mode="before")
    @classmethod
    def _blank_landing(cls, value: object) -> object:
        """`DVC_LANDING_DIR=` (empty) is unset: the folder beside the DuckDB file."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _secrets_from_blocks(self) -> Settings:
        """A secret given by environment (or .env) wins; else a named Prefect Secret block is loaded
        (only then: no Prefect call when no block is named)."""
        for name in ("source_token", "smtp_password", "hash_key"):
            block = getattr(self, f"{name}_block")
            if block and name not in self.model_fields_set:
                setattr(self, name, SecretStr(_load_secret_block(block, f"DVC_{name.upper()}_BLOCK")))
        return self

    @model_validator(mode="after")
    def _source_url_transport(self) -> Settings:
        """An ``http://`` source URL only on loopback, unless DVC_ALLOW_INSECURE_HTTP says otherwise."""
        problem = insecure_source_url(self.source_url, self.allow_insecure_http)
        if problem:
            raise ValueError(problem)
        return self


#: The only settings a deployment's or a flow run's ``settings_overrides`` parameter may change:
#: sizes, thresholds, windows, the source name and the period cut. Anyone who can reach the
#: Prefect API can set parameters, so connection targets (source, warehouse, SMTP, webhook),
#: folders, secrets and Secret-block names are refused there (``flows.lifecycle.run_settings``): they
#: come only from the worker's environment (or ``.env``) or a Prefect Secret block. A new
#: setting is not overridable until it is added here.
SAFE_OVERRIDES: frozenset[str] = frozenset({
    "source_name", "page_size", "chunk_records", "overlap_minutes", "batch_days", "lock_wait_seconds",
    "critical_threshold", "warning_alert_threshold", "freshness_days", "unpaid_threshold_days", "period_cut",
    "gx_row_budget", "gx_sample_fraction",
})


def _load_secret_block(block: str, setting: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block, _sync=True).get()
    except Exception as exc:  # noqa: BLE001 - a clear message, never the value
        raise ValueError(f"{setting}: cannot load the Prefect Secret block {block!r} ({type(exc).__name__})") from None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{setting}: the Prefect Secret block {block!r} does not hold a non-empty text value")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


# ---------------------------------------------------------------------------------------------
# Transport: loopback hosts, the source URL's scheme
# ---------------------------------------------------------------------------------------------
def is_loopback_host(host: str | None) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (no DNS lookup: any other name counts as remote)."""
    if not host:
        return False
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_source_url(url: str | None, allow_insecure_http: bool = False) -> str | None:
    """Why ``url`` may not be used as DVC_SOURCE_URL (an ``http://`` URL to a host that is not
    loopback, unless allowed), or None. The message names the host, never credentials or path."""
    if not url or allow_insecure_http:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme.lower() != "http":
        return None
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if is_loopback_host(host):
        return None
    return (f"DVC_SOURCE_URL is http:// to {host or 'an unknown host'}, which is not loopback: the bearer token "
            "and the records would cross the network in clear. Use https://, or set DVC_ALLOW_INSECURE_HTTP=true "
            "to allow it explicitly")


def smtp_use_starttls(settings: Settings) -> bool:
    """DVC_SMTP_STARTTLS when set; unset (auto): STARTTLS unless DVC_SMTP_HOST is loopback."""
    if settings.smtp_starttls is not None:
        return settings.smtp_starttls
    return not is_loopback_host(settings.smtp_host)


# ---------------------------------------------------------------------------------------------
# The applicant-ID hash key
# ---------------------------------------------------------------------------------------------
#: The development default of DVC_HASH_KEY (public: in the source), refused by the commands and
#: flows that write applicants' data.
DEV_HASH_KEY = "dvc-etl-dev-key-change-me"
#: The key `dvc-etl demo` uses for simulated data when no production-grade key is configured
#: (public too: accepted only inside :func:`demo_hash_key_allowed`).
DEMO_HASH_KEY = "dvc-etl-demo-key-for-simulated-data-only-never-production"
MIN_HASH_KEY_BYTES = 32
_DEMO_KEY_ALLOWED: ContextVar[bool] = ContextVar("dvc_demo_key_allowed", default=False)


class HashKeyError(ValueError):
    """DVC_HASH_KEY is not fit for real applicants' data."""


def hash_key_id(key: bytes | str | SecretStr) -> str:
    """A short, non-secret id of a hash key (first 8 hex digits of HMAC(key, "dvc-key-id")), stored
    beside each applicant key (``core.dossiers.applicant_key_id``) so a rotation shows."""
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hmac.new(raw, b"dvc-key-id", hashlib.sha256).hexdigest()[:8]


def hash_key_problem(settings: Settings) -> str | None:
    """Why the configured DVC_HASH_KEY may not hash real applicants' IDs, or None."""
    key = settings.hash_key.get_secret_value() if settings.hash_key is not None else ""
    if key == DEMO_HASH_KEY and _DEMO_KEY_ALLOWED.get():
        return None
    how = (f"set DVC_HASH_KEY (or DVC_HASH_KEY_BLOCK) to a private random value of at least {MIN_HASH_KEY_BYTES} "
           "bytes, e.g. `python -c \"import secrets; print(secrets.token_hex(32))\"`")
    if not key:
        return f"DVC_HASH_KEY is empty: {how}"
    if key in (DEV_HASH_KEY, DEMO_HASH_KEY):
        return f"DVC_HASH_KEY is the public {'development' if key == DEV_HASH_KEY else 'demo'} key: {how}"
    if len(key.encode("utf-8")) < MIN_HASH_KEY_BYTES:
        return f"DVC_HASH_KEY is shorter than {MIN_HASH_KEY_BYTES} bytes: {how}"
    return None


def require_hash_key(settings: Settings) -> Settings:
    """``settings`` when its hash key may hash real applicants' IDs; else raise
    :class:`HashKeyError` naming DVC_HASH_KEY (never its value)."""
    problem = hash_key_problem(settings)
    if problem:
        raise HashKeyError(problem)
    return settings


def require_run_settings(settings: Settings) -> Settings:
    """What every warehouse-writing flow checks before it touches anything: the hash key is fit
    (:func:`require_hash_key`), and log lines are scrubbed of the warehouse URL's password."""
    require_hash_key(settings)
    from tasks.scrub import install_log_scrubber

    install_log_scrubber(settings)
    return settings


@contextmanager
def demo_hash_key_allowed() -> Iterator[None]:
    """Inside this block (``dvc-etl demo``) the public :data:`DEMO_HASH_KEY` is accepted."""
    token = _DEMO_KEY_ALLOWED.set(True)
    try:
        yield
    finally:
        _DEMO_KEY_ALLOWED.reset(token)
