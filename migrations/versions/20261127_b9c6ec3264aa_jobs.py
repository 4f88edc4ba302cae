"""Jobs: one table for every kind of background work (bulk record uploads, record files).

Revision ID: b9c6ec3264aa
Revises: 0d1a6e356253
Create Date: 2026-11-27 13:54:08.101467
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = 'b9c6ec3264aa'
down_revision = '0d1a6e356253'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('script_id', sa.Uuid(), nullable=True),
    sa.Column('total', sa.BigInteger(), nullable=True),
    sa.Column('processed', sa.BigInteger(), nullable=False),
    sa.Column('inserted', sa.BigInteger(), nullable=False),
    sa.Column('duplicates', sa.BigInteger(), nullable=False),
    sa.Column('failed', sa.BigInteger(), nullable=False),
    sa.Column('errors', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('error_description', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('requested_by', sa.String(length=255), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('fingerprint', sa.String(length=64), nullable=True),
    sa.Column('checkpoint', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('requested_by', 'script_id', 'idempotency_key', name='uq_jobs_idempotency')
    )
    op.create_index('ix_jobs_created_at_id', 'jobs', ['created_at', 'id'], unique=False)
    op.create_index(op.f('ix_jobs_script_id'), 'jobs', ['script_id'], unique=False)
    op.create_index('ix_jobs_state_created_at', 'jobs', ['state', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_state_created_at', table_name='jobs')
    op.drop_index(op.f('ix_jobs_script_id'), table_name='jobs')
    op.drop_index('ix_jobs_created_at_id', table_name='jobs')
    op.drop_table('jobs')
