-- Version 21 (issue 14): the dashboard's operations page counts each model's waiting rows of live
-- batches from the claim's index alone (requests_pending_route_idx: model in its key), without any
-- pending row's heap; what it still needs from the heap is which of them are backing off
-- (not_before in the future), found here. Only rows a retry or a hand-back put back with a
-- not_before enter it (the claim clears not_before), so a request that succeeds at its first attempt
-- never writes to it: it costs nothing per request but ~40 bytes and one index insert per retried
-- attempt.
CREATE INDEX requests_backoff_idx ON requests (not_before) WHERE state = 'pending' AND not_before IS NOT NULL;
