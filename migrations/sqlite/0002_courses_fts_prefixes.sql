-- Prefix indexes for catalog search: FTS5 keeps the one-, two- and three-character prefixes of
-- every token in their own index, so a short search term ("1", "al") is one lookup instead of
-- a scan over every token that starts with it (over 100,000 courses, "1" starts about 11,000
-- distinct numbers). Longer terms start few tokens each and stay cheap without it.
--
-- FTS5 fixes its options when the table is created: the table is made again and rebuilt from
-- `courses` (its external content). The triggers that keep it in step name it and need no
-- change.
DROP TABLE courses_fts;
CREATE VIRTUAL TABLE courses_fts USING fts5(
    title, description, category, content = 'courses', content_rowid = 'seq',
    tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3'
);
INSERT INTO courses_fts (courses_fts) VALUES ('rebuild');
