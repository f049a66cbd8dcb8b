DROP FUNCTION IF EXISTS snorky.publish_delta(text, text, jsonb, jsonb);
DROP FUNCTION IF EXISTS snorky.publish(jsonb, jsonb);
DROP TABLE IF EXISTS snorky.stream;
