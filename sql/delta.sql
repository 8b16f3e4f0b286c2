-- The delta: for each classified key, the new values (NEW, CHANGED, UNCHANGED) or the
-- baseline's values (DELETED), the change type, and a reason a person can read:
--   NEW      -> 'new row'
--   DELETED  -> 'row removed'
--   CHANGED  -> '<column> changed from <old> to <new>' for each changed column, in table
--               order, joined by '; ', with null written as 'null' (and the text 'null'
--               as '"null"', so that the two are told apart).
--
-- Placeholders (the braces in the query below), filled by diff/sql.rs:
--   <values>          one CASE per output column choosing the new or the baseline value
--   <column_changes>  one '... changed from ... to ...' expression per compared column
--   <incoming_join> / <baseline_join>   key equality with the classified keys
--   <key_order>       the key columns, so the delta comes out in a stable order
SELECT
    {values},
    classified._change_type AS _change_type,
    CASE classified._change_type
        WHEN 'NEW' THEN 'new row'
        WHEN 'DELETED' THEN 'row removed'
        WHEN 'CHANGED' THEN {column_changes}
    END AS _change_reason
FROM classified
LEFT JOIN incoming ON {incoming_join}
LEFT JOIN baseline ON {baseline_join}
ORDER BY {key_order}
