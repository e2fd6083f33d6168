-- quantrack schema 3: drop the indexes no query uses.
-- DuckDB uses an index only for an equality (or IN) that matches few rows, and keeps
-- every index up to date on every insert and update, which made them the largest cost
-- of a bulk insert. created_at and batch_id grow with insertion order and git_commit
-- comes in long runs of one value, so DuckDB's per-row-group min/max statistics (zone
-- maps) already skip what a filter on them does not need, and a batch's or a commit's
-- runs are too many for an index scan anyway (measured at 1,000,000 experiments:
-- the same time with and without these indexes). config_hash stays indexed: hashes are
-- random, so zone maps cannot help, and a lookup is 50 times faster with its index.
DROP INDEX qt_experiments_created_at;
DROP INDEX qt_experiments_git_commit;
DROP INDEX qt_experiments_batch_id;
