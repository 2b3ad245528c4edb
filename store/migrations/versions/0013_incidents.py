"""incidents: incidents, the tickets they cover, and suggested clusters of similar reports

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 06:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('incidents',
    sa.Column('id', _ID, nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('anchor_ticket_id', _ID, nullable=False),
    sa.Column('declared_by_id', _ID, nullable=True),
    sa.Column('created_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('acknowledged_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('resolved_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('latest_update', sa.Text(), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['anchor_ticket_id'], ['tickets.id'], name=op.f('fk_incidents_anchor_ticket_id_tickets')),
    sa.ForeignKeyConstraint(['declared_by_id'], ['people.id'], name=op.f('fk_incidents_declared_by_id_people')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    op.create_index('ix_incidents_status', 'incidents', ['status'], unique=False)
    op.create_table('incident_links',
    sa.Column('ticket_id', _ID, nullable=False),
    sa.Column('incident_id', _ID, nullable=False),
    sa.Column('linked_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_links_incident_id_incidents')),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_incident_links_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('ticket_id', name=op.f('pk_incident_links'))
    )
    op.create_index('ix_incident_links_incident', 'incident_links', ['incident_id'], unique=False)
    op.create_table('incident_suggestions',
    sa.Column('id', _ID, nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('anchor_ticket_id', _ID, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('created_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('updated_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('incident_id', _ID, nullable=True),
    sa.ForeignKeyConstraint(['anchor_ticket_id'], ['tickets.id'],
                            name=op.f('fk_incident_suggestions_anchor_ticket_id_tickets')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_suggestions_incident_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident_suggestions'))
    )
    op.create_index('ix_incident_suggestions_status', 'incident_suggestions', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_incident_suggestions_status', table_name='incident_suggestions')
    op.drop_table('incident_suggestions')
    op.drop_index('ix_incident_links_incident', table_name='incident_links')
    op.drop_table('incident_links')
    op.drop_index('ix_incidents_status', table_name='incidents')
    op.drop_table('incidents')
