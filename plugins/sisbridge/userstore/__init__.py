"""The uConnect user store: its schema, the push of a run's change set, and the rollback of a push.

The store is PostgreSQL in production and SQLite as the embedded default, reached through SQLAlchemy
Core for its transactions and through DuckDB's postgres (or sqlite) extension for bulk transfer.

- `schema`: the store's tables (the only list of user columns), its engine, and its errors;
- `statements`: the store-side SQL of a batch and of a rollback, with the preference rule;
- `transfer`: the change set from the warehouse (DuckDB) into the store;
- `before_images`: what a push changed, kept for its rollback;
- `baseline`: the push's tables in the warehouse;
- `push` and `rollback`.
"""

from sisbridge.userstore.push import DEFAULT_BATCH_SIZE, PushPlan, PushResult, push
from sisbridge.userstore.rollback import RollbackRefused, rollback
from sisbridge.userstore.schema import (
    DEFAULT_CONN_ID,
    SIS_FIELDS,
    STATE_USER_COLUMNS,
    PermanentStoreError,
    StoreError,
    TransientStoreError,
    engine_from_connection,
    ensure_schema,
    metadata,
    push_batches,
    store_engine,
    user_communities,
    users,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONN_ID",
    "SIS_FIELDS",
    "STATE_USER_COLUMNS",
    "PermanentStoreError",
    "PushPlan",
    "PushResult",
    "RollbackRefused",
    "StoreError",
    "TransientStoreError",
    "engine_from_connection",
    "ensure_schema",
    "metadata",
    "push",
    "push_batches",
    "rollback",
    "store_engine",
    "user_communities",
    "users",
]
