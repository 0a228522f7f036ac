-- Version 23 (issue 10): requests_lease_idx goes. Every claimed row entered it (one of the five
-- index entries a claim's non-HOT update inserts: pkey, batch_line, batch_state, inflight, lease),
-- and no statement needs it: the reclaim reads the in-flight set through requests_inflight_idx
-- (its dead-daemon arm needs every in-flight row anyway, so the plan already ignored this index),
-- and the claim's per-owner in-flight count (fair-share.ts, several owners only) reads
-- requests_inflight_idx with the model in its key. Both stay bounded by the in-flight set (the
-- limits plus what daemons hold ahead). Measured in a 20k × 0 ms `fusillade run`:
-- docs/decisions/pipe-profile-20k.md.
DROP INDEX IF EXISTS requests_lease_idx;
