"""Accounts: a session generation, bumped to end every admin session of the account (sign-out, new password).

Revision ID: d5e5691ee993
Revises: faf8f92dd060
Create Date: 2026-12-01 12:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = 'd5e5691ee993'
down_revision = 'faf8f92dd060'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts') as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('accounts') as batch_op:
        batch_op.drop_column('session_generation')
