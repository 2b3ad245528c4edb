"""escalations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 08:58:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_table(
        'escalations',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('trigger', sa.String(length=32), nullable=False),
        sa.Column('metric', sa.String(length=32), nullable=True),
        sa.Column('chain_name', sa.String(length=64), nullable=False),
        sa.Column('chain', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('active_key', sa.String(length=32), nullable=False),
        sa.Column('level', sa.Integer(), nullable=False),
        sa.Column('loop', sa.Integer(), nullable=False),
        sa.Column('pages', sa.Integer(), nullable=False),
        sa.Column('run_token', sa.String(length=32), nullable=False),
        sa.Column('next_step_at', store.models.UTCDateTime(), nullable=True),
        sa.Column('breached_at', store.models.UTCDateTime(), nullable=False),
        sa.Column('paged_pagers', sa.JSON(), nullable=False),
        sa.Column('pagers_closed_at', store.models.UTCDateTime(), nullable=True),
        sa.Column('acknowledged_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
        sa.Column('acknowledged_by', sa.String(length=200), nullable=True),
        sa.Column('acknowledged_at', store.models.UTCDateTime(), nullable=True),
        sa.Column('started_at', store.models.UTCDateTime(), nullable=False),
        sa.Column('finished_at', store.models.UTCDateTime(), nullable=True),
        sa.Column('finish_reason', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['acknowledged_by_id'], ['people.id'],
                                name=op.f('fk_escalations_acknowledged_by_id_people')),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_escalations_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_escalations')),
        sa.UniqueConstraint('ticket_id', 'trigger', 'active_key', name=op.f('uq_escalations_ticket_id')),
    )
    op.create_index('ix_escalations_active', 'escalations', ['status', 'next_step_at'], unique=False,
                    postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)
    op.create_index(op.f('ix_escalations_ticket_id'), 'escalations', ['ticket_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_escalations_ticket_id'), table_name='escalations')
    op.drop_index('ix_escalations_active', table_name='escalations', postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)
    op.drop_table('escalations')
