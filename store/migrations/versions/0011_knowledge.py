"""knowledge: articles, their uses on tickets, requests held in ask_first mode, and the full-text search structures (FTS5 / tsvector + GIN)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 06:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# Spelled out here (not imported) so this migration keeps building what it built if the store changes.
SQLITE_CREATE = ("CREATE VIRTUAL TABLE kb_fts USING fts5(title, tags, body, tokenize = 'porter unicode61')",
                 # FTS5's own rank column then means bm25 with the title above the tags above the body.
                 "INSERT INTO kb_fts (kb_fts, rank) VALUES ('rank', 'bm25(10.0, 5.0, 1.0)')")
# A stored document (not an expression index): ranking reads it instead of re-parsing every matching body.
PG_CREATE = ("ALTER TABLE kb_articles ADD COLUMN kb_fts_document tsvector GENERATED ALWAYS AS ("
             "setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', tags), 'B') "
             "|| setweight(to_tsvector('english', body), 'C')) STORED",
             "CREATE INDEX ix_kb_articles_search ON kb_articles USING gin (kb_fts_document)")


def upgrade() -> None:
    op.create_table('kb_articles',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('source', sa.String(length=512), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('tags', sa.Text(), nullable=False),
    sa.Column('url', sa.String(length=1000), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('checksum', sa.String(length=64), nullable=False),
    sa.Column('updated_at', store.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_kb_articles')),
    sa.UniqueConstraint('source', name=op.f('uq_kb_articles_source'))
    )
    op.create_table('kb_uses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('article_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('person_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('at', store.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['article_id'], ['kb_articles.id'], name=op.f('fk_kb_uses_article_id_kb_articles'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['person_id'], ['people.id'], name=op.f('fk_kb_uses_person_id_people')),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_kb_uses_ticket_id_tickets'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_kb_uses'))
    )
    op.create_table('kb_held_requests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('intake_key', sa.String(length=300), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('person', sa.JSON(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('category', sa.String(length=100), nullable=True),
    sa.Column('priority', sa.String(length=16), nullable=True),
    sa.Column('origin', sa.JSON(), nullable=False),
    sa.Column('articles', sa.JSON(), nullable=False),
    sa.Column('created_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('due_at', store.models.UTCDateTime(), nullable=False),
    sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_kb_held_requests_ticket_id_tickets'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_kb_held_requests')),
    sa.UniqueConstraint('intake_key', name=op.f('uq_kb_held_requests_intake_key'))
    )
    op.create_index('ix_kb_uses_article', 'kb_uses', ['article_id', 'kind'], unique=False)
    op.create_index('ix_kb_uses_at', 'kb_uses', ['at'], unique=False)
    op.create_index('ix_kb_uses_ticket', 'kb_uses', ['ticket_id', 'kind'], unique=False)
    for statement in SQLITE_CREATE if op.get_bind().dialect.name == 'sqlite' else PG_CREATE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("DROP TABLE kb_fts")
    else:
        op.execute("DROP INDEX ix_kb_articles_search")
        op.execute("ALTER TABLE kb_articles DROP COLUMN kb_fts_document")
    op.drop_index('ix_kb_uses_ticket', table_name='kb_uses')
    op.drop_index('ix_kb_uses_at', table_name='kb_uses')
    op.drop_index('ix_kb_uses_article', table_name='kb_uses')
    op.drop_table('kb_uses')
    op.drop_table('kb_held_requests')
    op.drop_table('kb_articles')
