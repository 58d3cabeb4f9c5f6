-- portico schema v4 (PostgreSQL): the two resource facts the consent engine needs beyond
-- category, labels and category codings, kept beside them on every current and historical
-- row so reads rebuild `ResourceFacts` and searches filter on them in SQL
-- (store/src/search/consent.rs):
-- `date_ms`: the clinically relevant date (Unix ms, UTC; NULL when the resource has none),
-- `author`: who wrote it as a relative reference `Type/id` ('' when unknown).
-- Rows stored before this migration get them from `portico migrate`.
ALTER TABLE resources ADD COLUMN date_ms BIGINT;
ALTER TABLE resources ADD COLUMN author TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE resource_versions ADD COLUMN date_ms BIGINT;
ALTER TABLE resource_versions ADD COLUMN author TEXT COLLATE "C" NOT NULL DEFAULT '';
