-- The sync core: the append-only change log, the per-user clock, the merged LWW state.
-- Row-level security is enabled and forced on all three; user-scoped transactions run as the
-- non-superuser role mana_sync_user (see src/store/db.ts), so isolation holds even when the
-- service connects as a superuser.

DO $$
BEGIN
  CREATE ROLE mana_sync_user NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL; -- roles are cluster-wide: another database (or instance) created it first
END
$$;

DO $$
BEGIN
  EXECUTE format('GRANT mana_sync_user TO %I', current_user);
EXCEPTION WHEN insufficient_privilege OR invalid_grant_operation THEN
  NULL; -- already a member, or the role is its own (superusers need no membership)
END
$$;

-- The log. Never updated, never pruned: tombstones stay so that an export is complete.
CREATE TABLE sync_changes (
  id               uuid        PRIMARY KEY,
  app_id           text        NOT NULL,
  table_name       text        NOT NULL,
  record_id        text        NOT NULL,
  user_id          text        NOT NULL,
  op               text        NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
  data             jsonb,
  field_timestamps jsonb       NOT NULL DEFAULT '{}',
  client_id        text        NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  schema_version   integer     NOT NULL DEFAULT 1
);
CREATE INDEX sync_changes_user_app_created ON sync_changes (user_id, app_id, created_at);
CREATE INDEX sync_changes_table_record_created ON sync_changes (table_name, record_id, created_at);
CREATE INDEX sync_changes_user_app_table_created
  ON sync_changes (user_id, app_id, table_name, created_at);
-- One user's stamps are unique (the cursor guarantee); this also orders a user's whole log.
CREATE UNIQUE INDEX sync_changes_user_created ON sync_changes (user_id, created_at);

-- One row per user: the serialization point of that user's pushes and the last stamp handed out.
CREATE TABLE sync_clock (
  user_id text        PRIMARY KEY,
  last_at timestamptz NOT NULL
);

-- The merged current state of every record: {field: {v: value, t: updatedAt, c: clientId}}.
CREATE TABLE sync_records (
  user_id    text        NOT NULL,
  app_id     text        NOT NULL,
  table_name text        NOT NULL,
  record_id  text        NOT NULL,
  fields     jsonb       NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, app_id, table_name, record_id)
);

ALTER TABLE sync_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_changes FORCE ROW LEVEL SECURITY;
ALTER TABLE sync_clock ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_clock FORCE ROW LEVEL SECURITY;
ALTER TABLE sync_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_records FORCE ROW LEVEL SECURITY;

CREATE POLICY own_rows ON sync_changes
  USING (user_id = current_setting('app.current_user_id', true))
  WITH CHECK (user_id = current_setting('app.current_user_id', true));
CREATE POLICY own_rows ON sync_clock
  USING (user_id = current_setting('app.current_user_id', true))
  WITH CHECK (user_id = current_setting('app.current_user_id', true));
CREATE POLICY own_rows ON sync_records
  USING (user_id = current_setting('app.current_user_id', true))
  WITH CHECK (user_id = current_setting('app.current_user_id', true));

GRANT SELECT, INSERT ON sync_changes TO mana_sync_user;
GRANT SELECT, INSERT, UPDATE ON sync_clock TO mana_sync_user;
GRANT SELECT, INSERT, UPDATE ON sync_records TO mana_sync_user;
