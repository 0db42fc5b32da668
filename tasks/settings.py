"""Every setting of dvc-etl, in one typed place.

Values come from environment variables prefixed ``DVC_`` (``DVC_WAREHOUSE_URL``...), or from a
``.env`` file in the working directory. Each field's description is the one the README lists;
``tests/test_settings.py`` checks that the README names every setting.

Secrets (``source_token``, ``smtp_password``, ``hash_key``) are ``SecretStr``: they print as
``**********`` in logs, reprs and exception messages.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
TIMEZONE = "Asia/Ho_Chi_Minh"
#: A memory size as DuckDB's memory_limit takes it (case-insensitive): 512MB, 2GB, 1.5GiB...
MEMORY_SIZE = r"\d+(\.\d+)?\s*([KMGT]i?B|[KMGT]|B|bytes)"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DVC_", env_file=".env", extra="ignore")

    # --- source -------------------------------------------------------------------------------
    source_url: str | None = Field(
        None,
        description="Base URL of the provincial one-stop system's API (e.g. https://dvc.example.gov.vn). "
        "Unset: `dvc-etl run` refuses to start; `make run` / `dvc-etl demo` start the built-in simulator.",
    )
    source_token: SecretStr | None = Field(None, description="Bearer token for the source API (secret).")
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
        "under 1 GiB in all. Empty: DuckDB's default, 80 % of the machine's RAM. Ignored for PostgreSQL.",
    )
    reports_dir: Path = Field(Path("reports"), description="Where workbooks and data docs are written.")
    reference_dir: Path = Field(
        PROJECT_ROOT / "reference",
        description="Folder with simplifications.csv, delegations.csv and calendar_overrides.csv "
        "(default: the shipped reference/).",
    )
    inbox_dir: Path = Field(
        Path("inbox"),
        description="Folder where clerks drop Excel/CSV exports; processed files move to processed/, "
        "unreadable ones to failed/.",
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
    alert_webhook_url: str | None = Field(
        None, description="Slack-compatible incoming webhook that receives alerts (JSON with a `text`)."
    )
    smtp_host: str | None = Field(None, description="SMTP server for alert e-mails; unset disables e-mail.")
    smtp_port: int = Field(25, description="SMTP port.")
    smtp_user: str | None = Field(None, description="SMTP login, if the server needs one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (secret).")
    smtp_starttls: bool = Field(False, description="Use STARTTLS on the SMTP connection.")
    smtp_from: str = Field("dvc-etl@localhost", description="Sender address of alert e-mails.")
    alert_email_to: str | None = Field(None, description="Comma-separated recipients of alert e-mails.")

    # --- reports ------------------------------------------------------------------------------
    unpaid_threshold_days: int = Field(
        30,
        description="Days after the result after which an unpaid result is flagged in "
        "mart.rpt_unpaid_results (per-procedure overrides in reference/unpaid_thresholds.csv).",
    )

    office_name: str | None = Field(
        None,
        description="The reporting office named at the top of every workbook sheet (e.g. 'UBND huyện Tuy "
        "Phước'); unset: the highest-level unit in the report.",
    )
    period_cut: Literal["calendar", "decree-09"] = Field(
        "calendar",
        description="How `dvc-etl report --period` and the scheduled monthly report cut periods: `calendar` "
        "(calendar month, quarter, half, year) or `decree-09` (Decree 09/2019/NĐ-CP data cut: a month runs "
        "from the 15th of the previous month to the 14th; a year from 15 December to 14 December).",
    )
    report_number: str | None = Field(
        None,
        description="The report a workbook is attached to, written after 'Kèm theo Báo cáo số ' at the top of "
        "every sheet (e.g. '340/BC-UBND ngày 15/6/2024'); unset: no such line.",
    )
    report_place: str | None = Field(
        None,
        description="The place in the workbook's signature line '<place>, ngày dd tháng mm năm yyyy' (e.g. "
        "'Tuy Phước'); unset: the date without a place.",
    )

    # --- personal data ------------------------------------------------------------------------
    hash_key: SecretStr = Field(
        SecretStr("dvc-etl-dev-key-change-me"),
        description="Key of the keyed hash (HMAC-SHA256) that replaces applicant IDs in core; set a "
        "private value in production (secret).",
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

    @model_validator(mode="after")
    def _secrets_from_blocks(self) -> Settings:
        """A secret given by environment (or .env) wins; else a named Prefect Secret block is loaded
        (only then: no Prefect call when no block is named)."""
        for name in ("source_token", "smtp_password", "hash_key"):
            block = getattr(self, f"{name}_block")
            if block and name not in self.model_fields_set:
                setattr(self, name, SecretStr(_load_secret_block(block, f"DVC_{name.upper()}_BLOCK")))
        return self


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
