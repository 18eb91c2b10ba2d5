package dispatch

// An ordered sink's events stream deleted and made again under it.
//
// A stream made again numbers its events from 1 again, and a consumer made
// again under the same name listens on the same ack subjects. The orderer
// drops a message it holds already (a redelivery: its ack deadline passed
// while it waited), and it told one from another by sequence alone: the
// new stream's events at the sequences of the deleted stream's events it
// still held were dropped as redeliveries, and the old messages' acks then
// settled them at the server: acked, never delivered
// (TestReviewRev30AnOrderedSinkTakesTheNewStreamsEventsForTheOldOnesAndLosesThem).
// A message is now named by its sequence and when its stream stored it
// (heldKey), which a redelivery keeps and a new stream's event at the same
// sequence does not have: the new event is held beside the old one and
// delivered, and an old ack that reaches it first only settles it early.
//
// What stays open, and why no more is done: the deleted stream's messages
// are delivered too (they were real events), and their acks settle the
// new stream's at the same sequences before this replica delivers them. If
// the replica stops or loses the pin in between, its hand-back of the new
// message comes too late and that event is lost. Telling the old messages
// apart to silence them needs a read of the stream per held message (its
// creation time cannot decide alone: servers' clocks differ), and review
// rev31 proved both ways of reading it wrong: direct gets in a proof's
// second wedged a fresh stream's burst, and a follower's direct get that
// had not yet the message dropped it, out of order. A stream is made again
// under running replicas only by an operator's hand (docs/operations.md).

// heldKey names a message an orderer holds: its origin (partition and
// sequence) and when its stream stored it, which tells a deleted stream's
// message from the new stream's at the same sequence. A redelivery of a
// held message has both the same.
type heldKey struct {
	origin uint64
	stored int64 // UnixNano
}

// heldKeyOf is d's heldKey. d came from an events consumer (the lanes
// hold no retry), so received is when its stream stored it.
func heldKeyOf(d *delivery) heldKey {
	return heldKey{d.origin, d.received.UnixNano()}
}
