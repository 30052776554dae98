"""access-token state leaves the database for the shared store

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 01:05:00.000000

Which access tokens are still good is now kept in Redis (idp.services.access_tokens), so nothing
writes or reads the access_tokens table. Its rows were ten-minute tokens; dropping them ends no
session or grant. A downgrade recreates the empty table: tokens issued meanwhile live only in the
store, and the older code would treat them as unknown, which fails closed.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_tokens_session_id'))
        batch_op.drop_index(batch_op.f('ix_access_tokens_family_id'))
        batch_op.drop_index(batch_op.f('ix_access_tokens_expires_at'))
    op.drop_table('access_tokens')


def downgrade():
    op.create_table('access_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.String(length=36), nullable=True),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('session_id', sa.String(length=36), nullable=True),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], name=op.f('fk_access_tokens_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['family_id'], ['token_families.id'], name=op.f('fk_access_tokens_family_id_token_families'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_access_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_access_tokens'))
    )
    with op.batch_alter_table('access_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_tokens_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_tokens_family_id'), ['family_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_tokens_session_id'), ['session_id'], unique=False)
