// Package queue is the sink's durable queue: sealed batches of line
// protocol wait here, in order, from the moment they are sealed until
// InfluxDB has answered for every line of them. One goroutine pushes
// (the batcher), one takes (the writer).
//
// # Vocabulary
//
// A batch is what the pusher hands over: whole lines, plain or one gzip
// member. In the queue a batch is a record: in memory, on disk, or both.
// On disk records are appended to segment files, each record a 32-byte
// header (magic, lengths, sample count, samples before it in the segment,
// CRC-32C of payload and of header) and its payload. The cursor file says
// where the oldest record not yet written to InfluxDB starts. The taker
// takes a job: a run of records sent as one body.
//
// # What is durable when
//
// Every record is appended to disk as it is pushed (write-through), so a
// process crash (kill -9) costs nothing pushed. What a power cut costs is
// the sync policy's: SyncAlways syncs each record before Push returns and
// the cursor at each acknowledgement; SyncInterval syncs the segment being
// written, then the cursor, at most once per interval (a cut costs at most
// the last one or two intervals); SyncNever leaves it to the operating
// system. Whatever the policy, a segment is synced before the next one is
// started, the directory is synced when a segment file is created (before
// a record goes in it) or removed, and Close syncs everything. The cursor
// is synced after the records it points past, so a durable cursor never
// skips a record; a stale one sends written records again, which InfluxDB
// stores once (same series, same time).
//
// # Faults and what they cost
//
//   - A damaged or torn record costs that record: reading resynchronises
//     on the next intact one and counts the loss from the "samples before"
//     of the next record (or the damaged header). Damage before the cursor
//     costs nothing and is not counted; damage is counted once, not at
//     every open (the damage file remembers it).
//   - A disk that refuses a write or a sync (full, failing, read-only)
//     never costs what is on it: the record stays in memory, later ones
//     too, and the disk is retried with capped backoff; once it takes
//     writes, what waited is appended in order. Past MaxMemoryBytes the
//     oldest record that is only in memory is dropped (Drops.DiskError).
//   - Past MaxBytes on disk the oldest records are dropped (Drops.Full);
//     without a disk, past MaxMemoryBytes.
//
// A record the taker holds is never dropped, nor the newest one; every
// drop is returned to the caller to count.
package queue
