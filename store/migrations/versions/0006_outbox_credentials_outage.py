"""outbox: when a message first failed because its platform refused the bot's credentials; dead letters indexed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_DEAD = "dead_at IS NOT NULL"


def upgrade() -> None:
    op.add_column('outbox', sa.Column('first_failed_at', store.models.UTCDateTime(), nullable=True))
    # `ithelp outbox list --dead` and the ithelp_outbox_dead_messages gauge read only dead letters.
    op.create_index('ix_outbox_dead', 'outbox', ['dead_at'], unique=False,
                    postgresql_where=sa.text(_DEAD), sqlite_where=sa.text(_DEAD))


def downgrade() -> None:
    op.drop_index('ix_outbox_dead', table_name='outbox')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('first_failed_at')
