-- Leave half of each outbox page free. A relay's claim updates leased_until and attempts, neither
-- indexed: with room on the page PostgreSQL makes it a heap-only update (no new index entries in
-- the table's three indexes), which halves the claim's cost (500-row claim on 50,000 rows:
-- 8-10 ms at the default fillfactor, 4-5 ms at 50, on this project's bench machine). Outbox rows
-- live for milliseconds, so the extra space is a backlog's worth at most.
ALTER TABLE cqrs_outbox SET (fillfactor = 50);
