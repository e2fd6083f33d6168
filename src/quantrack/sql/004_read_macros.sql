-- quantrack schema 4: reading one experiment through two table macros.
-- DuckDB parses a statement's text every time it runs (about 0.6 microseconds per
-- character), and reading one experiment took two statements of 1,000 characters: a
-- third of a millisecond of get_experiment went to parsing them. A macro's body is parsed
-- once, when it is created, and stored parsed in the file; calling it is a short
-- statement. The seq stays a constant of the query, so DuckDB still skips every row group
-- of params and metrics that cannot hold it (zone maps).

-- One experiment's row, by id (through the primary-key index), in the column order the
-- tracker reads (its `_COLUMNS`).
CREATE MACRO qt_experiment(experiment_id) AS TABLE
SELECT
    seq, id, name, strategy, engine, description, seed, batch_id, batch_index, attempt,
    retry_of, reproduces, reused_from, config_hash, git_commit, provenance, tags, status,
    created_at, started_at, completed_at, heartbeat_at, error, error_category
FROM qt_experiments
WHERE id = experiment_id;

-- The params (k = 0), metrics (1), inputs (2) and artifacts (3) of the experiments whose
-- seq is in first_seq..last_seq (one experiment, or a page of neighbours such as the
-- latest runs), in the layout of the tracker's `_AUX` query.
CREATE MACRO qt_experiment_parts(first_seq, last_seq) AS TABLE
SELECT
    0 AS k, seq, 0 AS pos, name, value_num AS num, value_text AS text, value_bool AS flag,
    value_json AS raw, NULL::VARCHAR AS artifact_id, NULL::BIGINT AS size,
    NULL::VARCHAR AS media_type, NULL::VARCHAR AS kind, NULL::VARCHAR AS part
FROM qt_params WHERE seq BETWEEN first_seq AND last_seq
UNION ALL
SELECT 1, seq, 0, name, value, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM qt_metrics WHERE seq BETWEEN first_seq AND last_seq
UNION ALL
SELECT 2, seq, position, name, NULL, NULL, NULL, NULL, artifact_id, size, media_type, kind, part
FROM qt_inputs WHERE seq BETWEEN first_seq AND last_seq
UNION ALL
SELECT 3, seq, position, name, NULL, NULL, NULL, NULL, artifact_id, size, media_type, kind, part
FROM qt_artifacts WHERE seq BETWEEN first_seq AND last_seq
ORDER BY k, seq, pos, name;
