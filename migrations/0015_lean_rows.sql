-- Leaner rows, version 15 (issue 14). No state update of a request is HOT: every one changes an
-- indexed column (state, which the partial pending, in-flight and lease indexes depend on, or
-- completed_at), so the free space fillfactor 85 kept on each page for HOT updates only made the
-- heap ~15% larger. New pages are filled; existing ones keep their layout until rewritten.
ALTER TABLE requests SET (fillfactor = 100);
