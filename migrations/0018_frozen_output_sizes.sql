-- Version 18 (issue 14): the size and line count of an ended batch's output and error files are
-- measured once and kept. Listing files measured every output file on the page from its batch's
-- requests at each read (1 s for a page of 20 with 10k-line batches, growing with the batches, not
-- the page). measured_for is the batch's finished_at the stored size_bytes and template_count were
-- measured at: they hold while the batch stays ended at that instant (a retry reopens it, setting
-- finished_at to NULL, and a new end sets a new one). NULL: not measured yet (or an input file).
ALTER TABLE files ADD COLUMN measured_for timestamptz;
