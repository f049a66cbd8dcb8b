-- The snorky schema: publishing from SQL, delivered when the transaction
-- commits, in order with the rows it changed (logical messages, no table).

-- The stream's identity: a random epoch made when the replication slot is
-- created; clients resuming by offset compare it.
CREATE TABLE snorky.stream (
    slot       text PRIMARY KEY,
    epoch      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- snorky.publish(channel, message): a PubSub message to every subscriber of
-- the channel (JSON equality, as the PubSub service compares channels),
-- delivered if and when the calling transaction commits.
CREATE FUNCTION snorky.publish(channel jsonb, message jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'snorky',
        jsonb_build_object('op', 'publish', 'channel', channel, 'message', message)::text);
END
$$;

-- snorky.publish_delta(model, type, data, old_data): a delta routed through
-- the dealers of the model exactly as the backend's publishDeltas would,
-- ordered with the row changes of its transaction. type is insert, update
-- (data is the new row, old_data the old one) or delete.
CREATE FUNCTION snorky.publish_delta(model text, type text, data jsonb, old_data jsonb DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF model IS NULL OR data IS NULL THEN
        RAISE EXCEPTION 'snorky.publish_delta: model and data must not be null';
    END IF;
    IF type IS NULL OR type NOT IN ('insert', 'update', 'delete') THEN
        RAISE EXCEPTION 'snorky.publish_delta: type must be insert, update or delete, not %', coalesce(quote_literal(type), 'NULL');
    END IF;
    IF type = 'update' AND old_data IS NULL THEN
        RAISE EXCEPTION 'snorky.publish_delta: an update needs old_data';
    END IF;
    PERFORM pg_logical_emit_message(true, 'snorky',
        jsonb_build_object('op', 'delta', 'model', model, 'type', type, 'data', data, 'old_data', old_data)::text);
END
$$;

REVOKE ALL ON FUNCTION snorky.publish(jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION snorky.publish_delta(text, text, jsonb, jsonb) FROM PUBLIC;
