-- A batch may have no deadline (the library's createBatch(fileId, { completionWindow: null }), or a
-- manager whose defaultCompletionWindow is null): its completion_window and expires_at are NULL, and
-- nothing of it ever expires. Every reader of expires_at treats NULL as "no deadline": the claim's
-- live batches (src/store/sql/claim.ts), finalize, cancel, the daemon's deadline timers and
-- batch-watch, request_view (NULL <= now() is not true) and batchLifecycleStatus.
-- Dropping NOT NULL changes only the catalog; the CHECK reads the (small) batches table once.
ALTER TABLE batches ALTER COLUMN expires_at DROP NOT NULL;
ALTER TABLE batches ALTER COLUMN completion_window DROP NOT NULL;
ALTER TABLE batches ADD CONSTRAINT batches_deadline_check CHECK ((expires_at IS NULL) = (completion_window IS NULL));
