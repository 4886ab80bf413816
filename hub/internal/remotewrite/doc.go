// Package remotewrite forwards what the hub stores to external
// Prometheus-compatible stores with the remote-write 1.0 protocol
// (snappy-compressed prompb.WriteRequest, sent by Prometheus' own
// remote.WriteClient), through a queue on disk that survives a store
// being down and the hub restarting.
//
// # Why not Prometheus' remote.Storage
//
// Prometheus' remote-write queues tail the TSDB's WAL with a watcher that
// starts, on every start, at "now": it sends only samples whose timestamp
// is after its own start (tsdb/wlog/watcher.go, s.T > w.startTimestamp).
// For the hub that loses three things: what was unsent when the hub
// stopped; every sample of an agent's backlog after an outage (their
// timestamps are older than the hub's start); and every out-of-order
// sample, which the TSDB writes to its WBL, not its WAL. The WAL is also
// truncated at head compaction whatever the queues have sent, so a store
// down for more than a few hours would lose data anyway.
//
// # What it does instead
//
// A Forwarder is the storage.Appendable (and AppendableV2) the metrics
// receiver appends to: it appends through to the DB and, once the DB has
// committed, writes the committed samples as one record into a segmented
// log on disk (queue.go documents the files). Each endpoint has a sender
// with its own cursor file: it reads records from its cursor, sends them
// as one request with the remote-write client (bearer token or basic
// auth from files, TLS), retries 5xx, 429 and network errors with capped
// backoff, counts a 4xx as failed and moves on, and saves its cursor after
// each accepted request. Segments every cursor has passed are deleted; a
// byte quota drops the oldest and counts them. Samples are sent in the
// order the hub committed them, so a store must accept out-of-order
// samples as far back as agents' backlogs reach (Prometheus:
// storage.tsdb.out_of_order_time_window).
//
// Delivery is at least once: a request whose answer was lost is sent
// again, and the store drops exact duplicates. The queue is fsynced when a
// segment is closed and on Close, as the TSDB's own WAL is, not per commit.
package remotewrite
