"""nps: one pulse row per person and round (the NPS question, its score, when it expires)

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-02 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0010'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('nps_pulses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('person_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('sent_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('expires_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('score', sa.SmallInteger(), nullable=True),
    sa.Column('answered_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_nps_pulses_person_id_people')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nps_pulses')),
    sa.UniqueConstraint('person_id', 'round', name=op.f('uq_nps_pulses_person_id'))
    )
    op.create_index('ix_nps_pulses_person_sent', 'nps_pulses', ['person_id', 'sent_at'], unique=False)
    op.create_index('ix_nps_pulses_sent', 'nps_pulses', ['sent_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_nps_pulses_sent', table_name='nps_pulses')
    op.drop_index('ix_nps_pulses_person_sent', table_name='nps_pulses')
    op.drop_table('nps_pulses')
