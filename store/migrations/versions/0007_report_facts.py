"""report_facts: one row of report facts per ticket, kept by the SLA clock

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00

Tickets opened before this revision have no row; reports replay their events.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('report_facts',
    sa.Column('ticket_id', _ID, autoincrement=False, nullable=False),
    sa.Column('opened_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=True),
    sa.Column('first_response', sa.String(length=8), nullable=True),
    sa.Column('first_response_seconds', sa.Float(), nullable=True),
    sa.Column('resolved_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('resolution', sa.String(length=8), nullable=True),
    sa.Column('resolution_seconds', sa.Float(), nullable=True),
    sa.Column('reopened_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('resolver_id', _ID, nullable=True),
    sa.Column('claimer_id', _ID, nullable=True),
    sa.Column('survey_sent_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('survey_answer', sa.String(length=8), nullable=True),
    sa.Column('changed_at', store.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_report_facts_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('ticket_id', name=op.f('pk_report_facts'))
    )
    op.create_index('ix_report_facts_opened_at', 'report_facts', ['opened_at'], unique=False)
    op.create_index('ix_report_facts_resolved_at', 'report_facts', ['resolved_at'], unique=False)
    op.create_index('ix_report_facts_changed_at', 'report_facts', ['changed_at'], unique=False)
    op.create_index('ix_report_facts_survey_sent_at', 'report_facts', ['survey_sent_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_report_facts_survey_sent_at', table_name='report_facts')
    op.drop_index('ix_report_facts_changed_at', table_name='report_facts')
    op.drop_index('ix_report_facts_resolved_at', table_name='report_facts')
    op.drop_index('ix_report_facts_opened_at', table_name='report_facts')
    op.drop_table('report_facts')
