-- The catalog is read far more than it is written. With GIN's default fastupdate, new entries
-- wait in a pending list that every search scans linearly until (auto)vacuum merges it: after
-- a bulk import, searches for rare words took 4-9 ms instead of 0.2 ms at 100,000 courses.
-- Without it each insert updates the index directly, a little slower, and searches stay fast.
ALTER INDEX courses_search SET (fastupdate = off);
