"""conversations: direct messages held while the bot asks which ticket they are about; who was welcomed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('held_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('person_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('conversation', sa.String(length=255), nullable=True),
    sa.Column('thread', sa.String(length=255), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('files', sa.JSON(), nullable=True),
    sa.Column('created_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('answered_at', store.models.UTCDateTime(), nullable=True),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_held_messages_person_id_people')),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_held_messages_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_held_messages'))
    )
    op.create_index('ix_held_messages_person_answered', 'held_messages', ['person_id', 'answered_at'], unique=False)
    op.create_table('welcomes',
    sa.Column('person_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('welcomed_at', store.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_welcomes_person_id_people')),
    sa.PrimaryKeyConstraint('person_id', name=op.f('pk_welcomes'))
    )


def downgrade() -> None:
    op.drop_table('welcomes')
    op.drop_index('ix_held_messages_person_answered', table_name='held_messages')
    op.drop_table('held_messages')
