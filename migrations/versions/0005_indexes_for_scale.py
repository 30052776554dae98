"""indexes chosen from EXPLAIN on a filled database (bench/scale.py)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 00:20:00.000000

- sessions: partial indexes on expires_at and last_active_at of open sessions, for the end-expired
  sweep the outbox worker runs every second (a sequential scan of every session without them), and
  on ended_at of ended sessions, for `idp purge`;
- authorization_codes.session_id, for the ON DELETE CASCADE when a session is deleted (each deleted
  session scanned the whole table);
- refresh_tokens.expires_at, token_families.expires_at and token_families.revoked_at (partial),
  for the batches of `idp purge`.

The plans with and without each are in bench/results/scale-*.json under "index_evidence".
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

OPEN = sa.text("ended_at IS NULL")
ENDED = sa.text("ended_at IS NOT NULL")
REVOKED = sa.text("revoked_at IS NOT NULL")


def upgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index('ix_sessions_open_expiry', ['expires_at'], unique=False,
                              postgresql_where=OPEN, sqlite_where=OPEN)
        batch_op.create_index('ix_sessions_open_idle', ['last_active_at'], unique=False,
                              postgresql_where=OPEN, sqlite_where=OPEN)
        batch_op.create_index('ix_sessions_ended_at', ['ended_at'], unique=False,
                              postgresql_where=ENDED, sqlite_where=ENDED)

    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_authorization_codes_session_id'), ['session_id'], unique=False)

    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_refresh_tokens_expires_at'), ['expires_at'], unique=False)

    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_token_families_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index('ix_token_families_revoked_at', ['revoked_at'], unique=False,
                              postgresql_where=REVOKED, sqlite_where=REVOKED)


def downgrade():
    with op.batch_alter_table('token_families', schema=None) as batch_op:
        batch_op.drop_index('ix_token_families_revoked_at')
        batch_op.drop_index(batch_op.f('ix_token_families_expires_at'))

    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_refresh_tokens_expires_at'))

    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_authorization_codes_session_id'))

    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_sessions_ended_at')
        batch_op.drop_index('ix_sessions_open_idle')
        batch_op.drop_index('ix_sessions_open_expiry')
