"""Jobs: how often a runner was lost at the same checkpoint, so a job that kills its worker is not resumed for ever.

Revision ID: 7c3e1f0a9b21
Revises: d5e5691ee993
Create Date: 2026-12-01 16:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '7c3e1f0a9b21'
down_revision = 'd5e5691ee993'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.add_column(sa.Column('lost_runs', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('lost_at_checkpoint', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch_op:
        batch_op.drop_column('lost_at_checkpoint')
        batch_op.drop_column('lost_runs')
