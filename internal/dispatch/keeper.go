package dispatch

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// keeper keeps every message a pull has handed this process alive until it
// is settled: JetStream's ack timer runs from delivery, not from when a
// worker takes the message, so a message waiting its turn (behind the
// workers, in a batch being filled, for a gate slot) would otherwise be
// handed out again after ack_wait while its first copy is still queued,
// and the vendor would get it twice with nothing failing.
//
// One ticker for all of a consumer's messages: each tick sends an
// in-progress ack for every message not touched for a third of ack_wait.
// A message is released when it is settled (its Ack, Nak or Term, through
// kept), so the set holds what this process has in hand, bounded by the
// pull's prefetch and the sink's workers and batches.
type keeper struct {
	every time.Duration // a message untouched this long gets an in-progress ack

	// epoch counts the consumer instances this keeper has outlived
	// (orphanAll): a message pulled in an earlier one is settled with
	// nothing sent.
	epoch atomic.Uint64

	mu   sync.Mutex
	held map[*kept]struct{}

	stop chan struct{}
	done sync.WaitGroup
}

func newKeeper(ackWait time.Duration) *keeper {
	k := &keeper{every: ackWait / 3, held: map[*kept]struct{}{}, stop: make(chan struct{})}
	// Ticking at half the touch interval, a message goes at most half of
	// ack_wait untouched in our hands.
	tick := max(ackWait/6, 10*time.Millisecond)
	k.done.Go(func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-k.stop:
				return
			case now := <-t.C:
				k.touch(now)
			}
		}
	})
	return k
}

// add takes msg into the keeper's care. waited is how long it may already
// have waited since JetStream delivered it (in the pull's buffer): it is
// touched that much sooner. epoch is the keeper's when the pull that
// delivered msg began (pullEpoch): a message of an earlier consumer
// instance taken from a pull's buffer after orphanAll is one of it.
func (k *keeper) add(msg jetstream.Msg, waited time.Duration, epoch uint64) *kept {
	m := &kept{Msg: msg, k: k, touched: time.Now().Add(-waited), epoch: epoch}
	k.mu.Lock()
	k.held[m] = struct{}{}
	k.mu.Unlock()
	return m
}

func (k *keeper) release(m *kept) {
	k.mu.Lock()
	delete(k.held, m)
	k.mu.Unlock()
}

// touch sends an in-progress ack for every held message due one. The acks
// are sent outside the lock: a publish may wait on a slow connection.
func (k *keeper) touch(now time.Time) {
	var due []jetstream.Msg
	epoch := k.epoch.Load()
	k.mu.Lock()
	for m := range k.held {
		if m.epoch != epoch {
			delete(k.held, m) // an earlier consumer instance's: not kept alive
			continue
		}
		if now.Sub(m.touched) >= k.every {
			m.touched = now
			due = append(due, m.Msg)
		}
	}
	k.mu.Unlock()
	for _, m := range due {
		_ = m.InProgress()
	}
}

// hold puts a heldMsg (held.go) in place of the client's message in m,
// releasing the client's, for a message a keyed batcher holds. Only the
// keeper reads m.Msg concurrently (touch, under k.mu); whoever else has m
// hands it on through a channel.
func (m *kept) hold(nc *nats.Conn) {
	h := holdMsg(nc, m.Msg)
	m.k.mu.Lock()
	m.Msg = h
	m.k.mu.Unlock()
}

// close stops the ticker, once nothing it keeps can still be worked on:
// a sink's keepers close when the sink's work is over (keepers), not when
// its pulls stop, as what the workers hold is delivered during
// shutdown_grace; a keyed batcher holds its groups for seconds then,
// each waiting for a sender, and one left untouched past ack_wait went
// to another replica while this one still sent it.
func (k *keeper) close() {
	close(k.stop)
	k.done.Wait()
}

// keepers makes a sink's keepers, one per consumer it pulls; close them
// (closeAll) once its workers, batcher and held messages are done.
type keepers []*keeper

func (ks *keepers) add(c jetstream.Consumer) *keeper {
	k := newKeeper(ackWaitOf(c))
	*ks = append(*ks, k)
	return k
}

// closeAll closes them; by pointer, so that a closeAll deferred before
// the keepers are added closes them all.
func (ks *keepers) closeAll() {
	for _, k := range *ks {
		k.close()
	}
}

// pullEpoch is the epoch to give add for the messages of a pull that
// begins now.
func (k *keeper) pullEpoch() uint64 { return k.epoch.Load() }

// orphanAll lets go of every message pulled before now: the consumer
// instance that delivered them is gone (deleted, its stream deleted or
// made again, recreated by any replica). Their acks and terms must not be
// sent: a consumer recreated under the same name listens on the same ack
// subjects ($JS.ACK.<stream>.<consumer>.….<stream seq>.…), and in a
// stream made again the server would take an old message's ack or term
// for the new stream's event at that sequence, which would then never be
// delivered (TestReviewRev27AnAckFromTheDeletedStreamSettlesTheNewStreams-
// Event). They are naked instead (kept.done). That holds for messages
// still in a pull's buffer too, taken into the keeper later (their pull's
// epoch is the old one: TestReviewRev28AMessageStillInThePullsBufferIs-
// NotOrphaned), and the pull itself is handed back and begun again
// (feed). What is in flight still goes to the vendor: duplicates, never a
// loss.
func (k *keeper) orphanAll() {
	k.epoch.Add(1)
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.held)
}

// kept is a message in a keeper's care: settling it releases it.
type kept struct {
	jetstream.Msg
	k       *keeper
	touched time.Time // under k.mu
	// epoch is the keeper's when the pull that delivered it began: not
	// the keeper's now, the message is orphaned (orphanAll), and settling
	// it sends nothing.
	epoch uint64
}

// orphaned says m was delivered by a consumer instance that is gone.
func (m *kept) orphaned() bool { return m.epoch != m.k.epoch.Load() }

// done releases m and says whether it is orphaned: delivered by a
// consumer instance that is gone. An orphaned message is handed back
// whatever its settlement: its ack or term could settle another event
// (the stream made again), a nak cannot lose one, only have it delivered
// again, and a message of the new instance wrongly taken for an old one's
// (pulled before its healer's look) comes again now, not after ack_wait.
// No closure per settlement: an ack is per event.
func (m *kept) done() (orphaned bool) {
	m.k.release(m)
	return m.orphaned()
}

func (m *kept) Ack() error {
	if m.done() {
		return m.Msg.Nak()
	}
	return m.Msg.Ack()
}

func (m *kept) DoubleAck(ctx context.Context) error {
	if m.done() {
		return m.Msg.Nak()
	}
	return m.Msg.DoubleAck(ctx)
}

func (m *kept) Nak() error {
	m.k.release(m)
	return m.Msg.Nak()
}

func (m *kept) NakWithDelay(d time.Duration) error {
	m.k.release(m)
	return m.Msg.NakWithDelay(d)
}

func (m *kept) Term() error {
	if m.done() {
		return m.Msg.Nak()
	}
	return m.Msg.Term()
}

func (m *kept) TermWithReason(reason string) error {
	if m.done() {
		return m.Msg.Nak()
	}
	return m.Msg.TermWithReason(reason)
}

// InProgress is not a settlement: m stays in the keeper's care.
func (m *kept) InProgress() error {
	if m.orphaned() {
		return nil
	}
	return m.Msg.InProgress()
}
