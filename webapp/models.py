"""SQLAlchemy models of every resource the contract names."""

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from webapp.fields import new_id


class UTCDateTime(TypeDecorator):
    """A timestamp stored and returned in UTC on every database (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class HasIdAndCreatedAt:
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)


script_experiments = Table(
    "script_experiments",
    Base.metadata,
    Column("script_id", Uuid, ForeignKey("scripts.id", ondelete="CASCADE"), primary_key=True),
    Column("experiment_id", Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True),
)
script_datasets = Table(
    "script_datasets",
    Base.metadata,
    Column("script_id", Uuid, ForeignKey("scripts.id", ondelete="CASCADE"), primary_key=True),
    Column("dataset_id", Uuid, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
)
dataset_experiments = Table(
    "dataset_experiments",
    Base.metadata,
    Column("dataset_id", Uuid, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
    Column("experiment_id", Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True),
)


class Experiment(HasIdAndCreatedAt, Base):
    __tablename__ = "experiments"

    experiment_name: Mapped[str] = mapped_column(String(255), unique=True)
    experiment_info: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    experiment_start_date: Mapped[date | None] = mapped_column(Date)
    experiment_end_date: Mapped[date | None] = mapped_column(Date)


class Season(HasIdAndCreatedAt, Base):
    __tablename__ = "seasons"
    __table_args__ = (UniqueConstraint("experiment_id", "season_name"),)

    experiment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    season_name: Mapped[str] = mapped_column(String(255))
    season_info: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    season_start_date: Mapped[date | None] = mapped_column(Date)
    season_end_date: Mapped[date | None] = mapped_column(Date)

    experiment: Mapped[Experiment] = relationship(lazy="joined")

    @property
    def experiment_name(self) -> str:
        return self.experiment.experiment_name


class Site(HasIdAndCreatedAt, Base):
    __tablename__ = "sites"

    site_name: Mapped[str] = mapped_column(String(255), unique=True)
    site_city: Mapped[str | None] = mapped_column(String(255))
    site_state: Mapped[str | None] = mapped_column(String(255))
    site_country: Mapped[str | None] = mapped_column(String(255))
    site_info: Mapped[dict] = mapped_column(JSONDocument, default=dict)


class Dataset(HasIdAndCreatedAt, Base):
    __tablename__ = "datasets"

    dataset_name: Mapped[str] = mapped_column(String(255), unique=True)
    dataset_info: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    collection_date: Mapped[date | None] = mapped_column(Date)

    experiments: Mapped[list[Experiment]] = relationship(secondary=dataset_experiments)


class Script(HasIdAndCreatedAt, Base):
    __tablename__ = "scripts"
    __table_args__ = (
        Index("ix_scripts_created_at_id", "created_at", "id"),
        Index("ix_scripts_script_info", "script_info", postgresql_using="gin").ddl_if(dialect="postgresql"),
    )

    script_name: Mapped[str] = mapped_column(String(255), index=True)
    script_url: Mapped[str | None] = mapped_column(Text)
    script_extension: Mapped[str | None] = mapped_column(String(255))
    script_info: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)

    experiments: Mapped[list[Experiment]] = relationship(secondary=script_experiments)
    datasets: Mapped[list[Dataset]] = relationship(secondary=script_datasets)

    def __init__(self, **kwargs):
        # A new script was last updated when it was created, to the microsecond.
        kwargs.setdefault("created_at", utcnow())
        kwargs.setdefault("updated_at", kwargs["created_at"])
        super().__init__(**kwargs)


class ScriptRun(HasIdAndCreatedAt, Base):
    __tablename__ = "script_runs"
    __table_args__ = (Index("ix_script_runs_script_id_created_at", "script_id", "created_at", "id"),)

    script_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scripts.id", ondelete="CASCADE"))
    script_run_info: Mapped[dict] = mapped_column(JSONDocument, default=dict)

    script: Mapped[Script] = relationship(lazy="joined")

    @property
    def script_name(self) -> str:
        return self.script.script_name


class FileStatus:
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class Record(HasIdAndCreatedAt, Base):
    __tablename__ = "script_records"
    __table_args__ = (
        # The identity of a record: a second one with the same values is a duplicate.
        UniqueConstraint(
            "script_id",
            "dataset_id",
            "experiment_id",
            "season_id",
            "site_id",
            "timestamp",
            name="uq_script_records_identity",
        ),
        Index("ix_script_records_script_id_timestamp", "script_id", "timestamp", "id"),
    )

    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    collection_date: Mapped[date] = mapped_column(Date)
    script_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scripts.id", ondelete="CASCADE"))
    script_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("script_runs.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    experiment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("experiments.id", ondelete="RESTRICT"), index=True)
    season_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("seasons.id", ondelete="RESTRICT"), index=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"), index=True)
    script_data: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    record_info: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    record_file: Mapped[str | None] = mapped_column(Text)
    file_name: Mapped[str | None] = mapped_column(String(255))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_sha256: Mapped[str | None] = mapped_column(String(64))
    file_content_type: Mapped[str | None] = mapped_column(String(255))
    file_status: Mapped[str | None] = mapped_column(String(16))

    script: Mapped[Script] = relationship(lazy="joined")
    dataset: Mapped[Dataset] = relationship(lazy="joined")
    experiment: Mapped[Experiment] = relationship(lazy="joined")
    season: Mapped[Season] = relationship(lazy="joined")
    site: Mapped[Site] = relationship(lazy="joined")

    @property
    def script_name(self) -> str:
        return self.script.script_name

    @property
    def dataset_name(self) -> str:
        return self.dataset.dataset_name

    @property
    def experiment_name(self) -> str:
        return self.experiment.experiment_name

    @property
    def season_name(self) -> str:
        return self.season.season_name

    @property
    def site_name(self) -> str:
        return self.site.site_name


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACTIVE = (QUEUED, RUNNING)


class JobKind:
    BULK_RECORDS = "bulk_records"
    RECORD_FILE = "record_file"


class Job(HasIdAndCreatedAt, Base):
    """One piece of background work, of any kind: the truth the API serves about its progress."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("requested_by", "script_id", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_state_created_at", "state", "created_at"),
        Index("ix_jobs_created_at_id", "created_at", "id"),
    )

    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED)
    # No foreign key: a job outlives the script it concerned, for the record.
    script_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    total: Mapped[int | None] = mapped_column(BigInteger)
    processed: Mapped[int] = mapped_column(BigInteger, default=0)
    inserted: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[list] = mapped_column(JSONDocument, default=list)
    error_description: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # What the job works on (staged file key, format, defaults, record id): private to the workers.
    params: Mapped[dict] = mapped_column(JSONDocument, default=dict)
    requested_by: Mapped[str] = mapped_column(String(255), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The X-Request-ID of the request that created the job: its log lines carry it too.
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Input items fully handled and committed; a resumed job skips them.
    checkpoint: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    # Runs in a row whose runner vanished (its lease expired) without getting past ``lost_at_checkpoint``.
    lost_runs: Mapped[int] = mapped_column(default=0, server_default="0")
    lost_at_checkpoint: Mapped[int | None] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Role:
    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"
    ORDER = (READER, WRITER, ADMIN)

    @classmethod
    def at_least(cls, role: str, needed: str) -> bool:
        """True when ``role`` includes the rights of ``needed``."""
        return cls.ORDER.index(role) >= cls.ORDER.index(needed)


class Account(HasIdAndCreatedAt, Base):
    """A person or pipeline that signs in (admin pages) or owns API tokens."""

    __tablename__ = "accounts"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.READER)
    # Stored in each admin session at sign-in; bumping it (sign-out, a new password) ends every session of the
    # account, since the session cookie itself cannot be recalled.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ApiToken(HasIdAndCreatedAt, Base):
    """An API token: only its SHA-256 is stored; the secret is shown once, at creation."""

    __tablename__ = "api_tokens"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    account: Mapped[Account] = relationship(lazy="joined")
