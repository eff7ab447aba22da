"""Sluice's one settings object: every knob, its default and why, read from ``SLUICE_*`` variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sluice.errors import ConfigurationError


class Settings(BaseSettings):
    """Runtime configuration; read once at start (``get_settings()``), never at import time."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="ignore")

    home: Path = Field(
        Path(".sluice"), description="Where local state lives (embedded PostgreSQL, zones, work files)."
    )
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the warehouse. Unset: an embedded PostgreSQL (pgserver) in $SLUICE_HOME/pg.",
    )
    database_secret_arn: str | None = Field(
        None,
        description="AWS Secrets Manager secret holding the warehouse URL (used when SLUICE_DATABASE_URL is unset).",
    )
    landing_uri: str | None = Field(None, description="Landing zone: a folder or s3://bucket/prefix.")
    staging_uri: str | None = Field(
        None, description="Staging/processed zone: a folder or s3://bucket/prefix."
    )
    quarantine_uri: str | None = Field(None, description="Quarantine zone for bad files and rows.")
    hard_testing: bool = Field(False, description="Default validation mode: true = hard (any bad row halts).")
    chunk_rows: int = Field(
        200_000, ge=1, description="Rows per streamed chunk: bounds memory, not file size."
    )
    warehouse_concurrency_limit: str | None = Field(
        None,
        description=(
            "Name of a Prefect global concurrency limit every load holds one slot of (create it first: "
            "prefect gcl create NAME --limit N); guards the warehouse when many runs load at once."
        ),
    )
    bulk_index_rows: int = Field(
        100_000,
        ge=0,
        description=(
            "A load of at least this many rows into a table holding fewer rows than it drops the table's "
            "non-unique indexes and rebuilds them after the COPY, in the same transaction (2-3x faster; "
            "readers of that table wait for the load). 0 = never."
        ),
    )
    backfill_shard_size: int = Field(
        100,
        ge=1,
        description=(
            "Files per run when `sluice backfill --deployment` targets an ingest-files deployment: one "
            "container ingests a shard of small files instead of one file each."
        ),
    )
    retries: int = Field(3, ge=0, description="Retries of I/O tasks (extract, load).")
    retry_delay_seconds: float = Field(
        2.0, ge=0, description="Base of the exponential back-off between retries."
    )
    ledger: Literal["postgres", "dynamodb"] = Field("postgres", description="Run ledger backend.")
    ledger_table: str = Field("sluice-run-ledger", description="DynamoDB table of the run ledger.")
    notify_blocks: str = Field(
        "",
        description="Comma-separated saved notification blocks, e.g. sns-notification/ops,email-notification/team.",
    )
    notify_on: Literal["failure", "change", "always"] = Field(
        "change",
        description=(
            "Which runs alert: failure = failed runs only; change = failed runs and runs that changed something "
            "(rows loaded or quarantined, tables rebuilt or created); always = every run, idle and skipped ones "
            "too. A block in SLUICE_NOTIFY_BLOCKS may override it with a suffix: sns-notification/ops@always."
        ),
    )
    json_logs: bool = Field(False, description="Log one JSON object per line (CloudWatch).")

    @field_validator("home")
    @classmethod
    def _home_expanded(cls, value: Path) -> Path:
        """``~`` is the user's home folder, as an env file that no shell expanded writes it (it was a folder named
        ``~`` in the working folder)."""
        return value.expanduser()

    @field_validator("notify_blocks")
    @classmethod
    def _policies_known(cls, value: str) -> str:
        """A block's ``@policy`` suffix is one of the policies: a typo would silently change who is alerted."""
        policies = ("failure", "change", "always")
        for ref in (part.strip() for part in value.split(",")):
            _, at, policy = ref.partition("@")
            if at and policy not in policies:
                raise ValueError(f"{ref!r}: the part after @ must be one of {', '.join(policies)}")
        return value

    api_key: SecretStr | None = Field(None, description="API key the query API requires in X-API-Key.")
    api_key_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding the API key (used when SLUICE_API_KEY is unset).",
    )
    glue_database: str | None = Field(
        None, description="AWS Glue database to catalog Sertis silver and gold in (S3 staging zone only)."
    )
    holidays_file: str | None = Field(
        None,
        description="Public holidays (CSV with a 'date' column) for if_common.dim_dates; default: the shipped list.",
    )
    products_file: str | None = Field(
        None, description="Products (product_id, product_category, product_name) for if_common.dim_products."
    )
    refresh_reference: bool = Field(
        False,
        description=(
            "Every analytics run rewrites if_common.dim_dates and dim_products from SLUICE_HOLIDAYS_FILE / "
            "SLUICE_PRODUCTS_FILE. Default false: existing reference tables are only read; an absent one is created."
        ),
    )
    totesys_source_url: SecretStr | None = Field(
        None, description="Totesys OLTP (PostgreSQL URL); default: database 'totesys' of the embedded server."
    )
    totesys_source_secret_arn: str | None = Field(
        None, description="AWS Secrets Manager secret holding the Totesys OLTP URL (when the URL is unset)."
    )
    totesys_ingestion_uri: str | None = Field(
        None, description="Totesys ingestion zone (extracted CSV); default: <staging>/totesys/ingestion."
    )
    totesys_processed_uri: str | None = Field(
        None,
        description="Totesys processed zone (star-schema Parquet); default: <staging>/totesys/processed.",
    )
    totesys_overlap_seconds: float = Field(
        300,
        ge=0,
        description="Re-read this far behind each table's watermark (late commits); loads absorb it.",
    )

    def zone(self, name: Literal["landing", "staging", "quarantine"]) -> str:
        """URI of a zone: the configured one, or a folder under ``home``."""
        configured = getattr(self, f"{name}_uri")
        return configured or str((self.home / name).resolve())

    @property
    def work_dir(self) -> Path:
        """Scratch space for spooled chunks of runs in progress (local disk, also on ECS)."""
        return (self.home / "work").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use; a bad value is one ``ConfigurationError``
    naming the variable and the value (not pydantic's multi-line report)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(_described(exc)) from None


def _described(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = "SLUICE_" + "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        shown = "(value hidden)" if name.endswith(("_URL", "_KEY")) else repr(error.get("input"))
        problems.append(f"{name} is {shown}: {message[:1].lower()}{message[1:]}")
    return "; ".join(problems)


def reload_settings() -> Settings:
    """Forget cached settings (tests and the CLI after changing the environment)."""
    get_settings.cache_clear()
    return get_settings()
