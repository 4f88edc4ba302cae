"""Jobs: the request id of the request that created the job, carried into its log lines and its representation.

Revision ID: 4b8e2c7d9a10
Revises: 7c3e1f0a9b21
Create Date: 2026-12-02 12:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '4b8e2c7d9a10'
down_revision = '7c3e1f0a9b21'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('request_id')
