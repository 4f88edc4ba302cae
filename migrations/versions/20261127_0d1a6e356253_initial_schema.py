"""Initial schema: scripts, runs, datasets, experiments, seasons, sites, records and their associations.

Revision ID: 0d1a6e356253
Revises: 
Create Date: 2026-11-27 13:44:35.731061
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0d1a6e356253'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('datasets',
    sa.Column('dataset_name', sa.String(length=255), nullable=False),
    sa.Column('dataset_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('collection_date', sa.Date(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dataset_name')
    )
    op.create_table('experiments',
    sa.Column('experiment_name', sa.String(length=255), nullable=False),
    sa.Column('experiment_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('experiment_start_date', sa.Date(), nullable=True),
    sa.Column('experiment_end_date', sa.Date(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_name')
    )
    op.create_table('scripts',
    sa.Column('script_name', sa.String(length=255), nullable=False),
    sa.Column('script_url', sa.Text(), nullable=True),
    sa.Column('script_extension', sa.String(length=255), nullable=True),
    sa.Column('script_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_scripts_created_at_id', 'scripts', ['created_at', 'id'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index('ix_scripts_script_info', 'scripts', ['script_info'], unique=False, postgresql_using='gin')
    op.create_index(op.f('ix_scripts_script_name'), 'scripts', ['script_name'], unique=False)
    op.create_table('sites',
    sa.Column('site_name', sa.String(length=255), nullable=False),
    sa.Column('site_city', sa.String(length=255), nullable=True),
    sa.Column('site_state', sa.String(length=255), nullable=True),
    sa.Column('site_country', sa.String(length=255), nullable=True),
    sa.Column('site_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('site_name')
    )
    op.create_table('dataset_experiments',
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.Column('experiment_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataset_id', 'experiment_id')
    )
    op.create_table('script_datasets',
    sa.Column('script_id', sa.Uuid(), nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['script_id'], ['scripts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('script_id', 'dataset_id')
    )
    op.create_table('script_experiments',
    sa.Column('script_id', sa.Uuid(), nullable=False),
    sa.Column('experiment_id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['script_id'], ['scripts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('script_id', 'experiment_id')
    )
    op.create_table('script_runs',
    sa.Column('script_id', sa.Uuid(), nullable=False),
    sa.Column('script_run_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['script_id'], ['scripts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_script_runs_script_id_created_at', 'script_runs', ['script_id', 'created_at', 'id'], unique=False)
    op.create_table('seasons',
    sa.Column('experiment_id', sa.Uuid(), nullable=False),
    sa.Column('season_name', sa.String(length=255), nullable=False),
    sa.Column('season_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('season_start_date', sa.Date(), nullable=True),
    sa.Column('season_end_date', sa.Date(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_id', 'season_name')
    )
    op.create_table('script_records',
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('collection_date', sa.Date(), nullable=False),
    sa.Column('script_id', sa.Uuid(), nullable=False),
    sa.Column('script_run_id', sa.Uuid(), nullable=True),
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.Column('experiment_id', sa.Uuid(), nullable=False),
    sa.Column('season_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('script_data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('record_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('record_file', sa.Text(), nullable=True),
    sa.Column('file_name', sa.String(length=255), nullable=True),
    sa.Column('file_size', sa.BigInteger(), nullable=True),
    sa.Column('file_sha256', sa.String(length=64), nullable=True),
    sa.Column('file_content_type', sa.String(length=255), nullable=True),
    sa.Column('file_status', sa.String(length=16), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['script_id'], ['scripts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['script_run_id'], ['script_runs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['season_id'], ['seasons.id'], ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('script_id', 'dataset_id', 'experiment_id', 'season_id', 'site_id', 'timestamp', name='uq_script_records_identity')
    )
    op.create_index(op.f('ix_script_records_dataset_id'), 'script_records', ['dataset_id'], unique=False)
    op.create_index(op.f('ix_script_records_experiment_id'), 'script_records', ['experiment_id'], unique=False)
    op.create_index('ix_script_records_script_id_timestamp', 'script_records', ['script_id', 'timestamp', 'id'], unique=False)
    op.create_index(op.f('ix_script_records_script_run_id'), 'script_records', ['script_run_id'], unique=False)
    op.create_index(op.f('ix_script_records_season_id'), 'script_records', ['season_id'], unique=False)
    op.create_index(op.f('ix_script_records_site_id'), 'script_records', ['site_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_script_records_site_id'), table_name='script_records')
    op.drop_index(op.f('ix_script_records_season_id'), table_name='script_records')
    op.drop_index(op.f('ix_script_records_script_run_id'), table_name='script_records')
    op.drop_index('ix_script_records_script_id_timestamp', table_name='script_records')
    op.drop_index(op.f('ix_script_records_experiment_id'), table_name='script_records')
    op.drop_index(op.f('ix_script_records_dataset_id'), table_name='script_records')
    op.drop_table('script_records')
    op.drop_table('seasons')
    op.drop_index('ix_script_runs_script_id_created_at', table_name='script_runs')
    op.drop_table('script_runs')
    op.drop_table('script_experiments')
    op.drop_table('script_datasets')
    op.drop_table('dataset_experiments')
    op.drop_table('sites')
    op.drop_index(op.f('ix_scripts_script_name'), table_name='scripts')
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index('ix_scripts_script_info', table_name='scripts', postgresql_using='gin')
    op.drop_index('ix_scripts_created_at_id', table_name='scripts')
    op.drop_table('scripts')
    op.drop_table('experiments')
    op.drop_table('datasets')
