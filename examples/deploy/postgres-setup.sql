-- PostgreSQL set-up for Snorky with a least-privilege role. Run as a
-- superuser, connected to the application's database (here "app", with the
-- model table public.tasks owned by the application's role):
--   psql -v ON_ERROR_STOP=1 -v password="'$(openssl rand -hex 24)'" -d app -f postgres-setup.sql
-- (or replace :password by a quoted literal).

-- 1. The role: LOGIN and REPLICATION (to stream the WAL), nothing else: not
--    a superuser, owns no table.
CREATE ROLE snorky LOGIN REPLICATION PASSWORD :password;

-- 2. CREATE on the database: for the `snorky` schema (snorky migrate) and so
--    that Snorky can create its publication itself if you skip step 4.
GRANT CREATE ON DATABASE app TO snorky;

-- 3. Row images for filtered routing (the server would set this itself, but
--    only a table's owner may).
ALTER TABLE public.tasks REPLICA IDENTITY FULL;

-- 4. The publication, exactly the model tables, owned by snorky so that it
--    may keep it (adding a table later: ALTER PUBLICATION snorky ADD TABLE
--    …, as a superuser or the table's owner, and a model in snorky.yaml).
CREATE PUBLICATION snorky FOR TABLE public.tasks
    WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);
ALTER PUBLICATION snorky OWNER TO snorky;

-- 5. Nobody but Snorky's own functions may write logical messages (see the
--    main README, "Publishing from SQL", Hardening).
REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text),
                           pg_logical_emit_message(boolean, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO snorky;
