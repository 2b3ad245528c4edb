"""privacy: redaction and anonymisation marks, the privacy log, indexes for retention scans and audit exports

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_UNREDACTED = "redacted_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table('people') as batch:
        batch.add_column(sa.Column('anonymised_at', store.models.UTCDateTime(), nullable=True))
    with op.batch_alter_table('tickets') as batch:
        batch.add_column(sa.Column('redacted_at', store.models.UTCDateTime(), nullable=True))
    op.create_index('ix_tickets_unredacted_resolved', 'tickets', ['resolved_at'], unique=False,
                    postgresql_where=sa.text(_UNREDACTED), sqlite_where=sa.text(_UNREDACTED))
    op.create_index('ix_ticket_events_at', 'ticket_events', ['at', 'id'], unique=False)
    op.create_index('ix_ticket_events_actor_at', 'ticket_events', ['actor_id', 'at'], unique=False)
    op.create_table('privacy_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', store.models.UTCDateTime(), nullable=False),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_privacy_log'))
    )
    op.create_index('ix_privacy_log_at', 'privacy_log', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_privacy_log_at', table_name='privacy_log')
    op.drop_table('privacy_log')
    op.drop_index('ix_ticket_events_actor_at', table_name='ticket_events')
    op.drop_index('ix_ticket_events_at', table_name='ticket_events')
    op.drop_index('ix_tickets_unredacted_resolved', table_name='tickets')
    with op.batch_alter_table('tickets') as batch:
        batch.drop_column('redacted_at')
    with op.batch_alter_table('people') as batch:
        batch.drop_column('anonymised_at')
