-- quantrack schema 1: experiments, their params, metrics and artifacts, batches.
-- Tables are prefixed qt_ and are private; the views at the end are the documented,
-- stable surface for plain SQL (`quantrack sql`, docs/storage.md).

-- `seq` is an internal, insertion-ordered key: params, metrics and artifacts rows are
-- keyed by it, so a lookup of one experiment's rows is pruned by DuckDB's zone maps
-- (min/max per row group) without an index over millions of rows.
CREATE TABLE qt_experiments (
    seq BIGINT NOT NULL,
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    strategy VARCHAR NOT NULL,
    engine VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    seed HUGEINT,
    batch_id VARCHAR,
    batch_index BIGINT,
    attempt BIGINT NOT NULL,
    retry_of VARCHAR,
    reproduces VARCHAR,
    reused_from VARCHAR,
    config_hash VARCHAR NOT NULL,
    git_commit VARCHAR,
    provenance VARCHAR NOT NULL,
    tags VARCHAR[] NOT NULL,
    status VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    heartbeat_at TIMESTAMP,
    error VARCHAR,
    error_category VARCHAR
);
CREATE INDEX qt_experiments_created_at ON qt_experiments (created_at);
CREATE INDEX qt_experiments_git_commit ON qt_experiments (git_commit);
CREATE INDEX qt_experiments_config_hash ON qt_experiments (config_hash);
CREATE INDEX qt_experiments_batch_id ON qt_experiments (batch_id);

-- One row per parameter; exactly one value column is set. Lists, dicts and None are in
-- value_json; an integer too large for a DOUBLE keeps its exact text in value_json too.
CREATE TABLE qt_params (
    seq BIGINT NOT NULL,
    name VARCHAR NOT NULL,
    value_num DOUBLE,
    value_text VARCHAR,
    value_bool BOOLEAN,
    value_json VARCHAR
);

CREATE TABLE qt_metrics (
    seq BIGINT NOT NULL,
    name VARCHAR NOT NULL,
    value DOUBLE NOT NULL
);

-- Every metric name in use, so resolving a bare name in a filter reads a tiny table.
CREATE TABLE qt_metric_names (name VARCHAR NOT NULL);

CREATE TABLE qt_inputs (
    seq BIGINT NOT NULL,
    experiment_id VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    artifact_id VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    media_type VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    name VARCHAR,
    part VARCHAR
);
CREATE INDEX qt_inputs_artifact_id ON qt_inputs (artifact_id);

CREATE TABLE qt_artifacts (
    seq BIGINT NOT NULL,
    position INTEGER NOT NULL,
    artifact_id VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    media_type VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    name VARCHAR,
    part VARCHAR
);

CREATE TABLE qt_batches (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    total BIGINT NOT NULL,
    succeeded BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    reused BIGINT NOT NULL,
    error_summary VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    heartbeat_at TIMESTAMP,
    params VARCHAR NOT NULL,
    tags VARCHAR[] NOT NULL,
    selection_metric VARCHAR
);

CREATE TABLE qt_batch_items (
    batch_id VARCHAR NOT NULL,
    "index" BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    experiment_id VARCHAR,
    params VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    error VARCHAR,
    error_category VARCHAR,
    duration_seconds DOUBLE,
    reused BOOLEAN NOT NULL,
    PRIMARY KEY (batch_id, "index", attempt)
);

-- The documented views.
CREATE VIEW experiments AS
SELECT
    id, name, strategy, engine, status, created_at, started_at, completed_at, heartbeat_at,
    date_diff('microsecond', started_at, completed_at) / 1e6 AS duration_seconds,
    error, error_category, batch_id, batch_index, attempt, retry_of, reproduces,
    reused_from, config_hash, git_commit, tags, seed, description,
    CAST(provenance AS JSON) AS provenance
FROM qt_experiments;

CREATE VIEW metrics AS
SELECT e.id AS experiment_id, m.name, m.value
FROM qt_metrics AS m JOIN qt_experiments AS e ON e.seq = m.seq;

CREATE VIEW params AS
SELECT
    e.id AS experiment_id, p.name, p.value_num, p.value_text, p.value_bool,
    CAST(p.value_json AS JSON) AS value_json
FROM qt_params AS p JOIN qt_experiments AS e ON e.seq = p.seq;

CREATE VIEW experiment_inputs AS
SELECT experiment_id, position, artifact_id, size, media_type, kind, name, part
FROM qt_inputs;

CREATE VIEW experiment_artifacts AS
SELECT e.id AS experiment_id, a.position, a.artifact_id, a.size, a.media_type,
       a.kind, a.name, a.part
FROM qt_artifacts AS a JOIN qt_experiments AS e ON e.seq = a.seq;

CREATE VIEW batches AS
SELECT
    id, name, status, total, succeeded, failed, cancelled, reused,
    CAST(error_summary AS JSON) AS error_summary, created_at, started_at, completed_at,
    heartbeat_at, date_diff('microsecond', started_at, completed_at) / 1e6 AS duration_seconds,
    CAST(params AS JSON) AS params, tags, selection_metric
FROM qt_batches;

CREATE VIEW batch_items AS
SELECT
    batch_id, "index", attempt, experiment_id, CAST(params AS JSON) AS params, status,
    error, error_category, duration_seconds, reused
FROM qt_batch_items;
