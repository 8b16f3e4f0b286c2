-- Key changes (`renames: true`): a row removed and a row added whose compared columns hold
-- the same values are one row whose key changed (a SKU re-coded by the vendor). It comes out
-- as a RENAMED row: today's values, the old key in the _previous_<key> columns, and the reason
--   'key <column> changed from <old> to <new>' for each key column that differs, joined by '; '.
-- Only a pairing without doubt is made: the values must be held by exactly one removed row
-- and exactly one added row (null holds the same value as null; a column with a tolerance
-- compares exactly). Every other removed or added row stays DELETED or NEW; the other rows
-- gain null _previous_<key> columns.
--
-- Placeholders (the braces in the query below), filled by diff/sql.rs:
--   <delta>             the delta (sql/delta.sql)
--   <content>           the compared columns
--   <same_content>      removed.c IS NOT DISTINCT FROM added.c for each compared column
--   <columns>           the delta's columns
--   <added_columns>     added.c for each of the delta's columns
--   <previous_keys>     removed.k AS _previous_k for each key column
--   <no_previous_keys>  a null of each key column's type AS _previous_k
--   <key_changes>       one 'key ... changed from ... to ...' expression per key column
--   <came_in> / <went_in>  a pair's new / old key equal to the row's key
--   <key_order>         the key columns
WITH delta AS (
    {delta}
),
removed AS (
    SELECT *, COUNT(*) OVER (PARTITION BY {content}) AS _holders
    FROM delta
    WHERE _change_type = 'DELETED'
),
added AS (
    SELECT *, COUNT(*) OVER (PARTITION BY {content}) AS _holders
    FROM delta
    WHERE _change_type = 'NEW'
),
renamed AS (
    SELECT {added_columns}, {previous_keys},
        'RENAMED' AS _change_type,
        {key_changes} AS _change_reason
    FROM added
    JOIN removed ON {same_content}
    WHERE added._holders = 1 AND removed._holders = 1
)
SELECT {columns}, {no_previous_keys}, _change_type, _change_reason
FROM delta
WHERE _change_type NOT IN ('NEW', 'DELETED')
UNION ALL
SELECT {columns}, {no_previous_keys}, _change_type, _change_reason
FROM added
WHERE NOT EXISTS (SELECT 1 FROM renamed WHERE {came_in})
UNION ALL
SELECT {columns}, {no_previous_keys}, _change_type, _change_reason
FROM removed
WHERE NOT EXISTS (SELECT 1 FROM renamed WHERE {went_in})
UNION ALL
SELECT * FROM renamed
ORDER BY {key_order}
