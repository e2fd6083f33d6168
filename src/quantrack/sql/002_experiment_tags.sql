-- quantrack schema 2: one row per experiment tag, for plain SQL over tags.
CREATE VIEW experiment_tags AS
SELECT id AS experiment_id, unnest(tags) AS tag
FROM qt_experiments;
