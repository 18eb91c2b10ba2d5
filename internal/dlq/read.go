package dlq

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/jsread"
)

// Reading the dead-letter stream leaves nothing behind on the server: it
// is a series of message gets by sequence, each answered and forgotten,
// never a consumer. (Reads used to create an ordered consumer each, which
// the server kept for 5 minutes: one scan of the console's pages filled the
// stream's consumer cap, 1,000, and every read failed until they expired.)
//
// A stream that allows direct gets (topology.Ensure sets it) is read a
// batch at a time; one created before that (until a dispatcher of this
// version starts and updates it) one message per request, from its leader.
// Direct gets are answered by any replica, so a read may miss a record
// stored milliseconds before: fine for tools and pages a person reads,
// and a replay or purge changes a record only through its leader.

// readWait bounds each wait for a reply of a get from the leader.
const readWait = jsread.Wait

// storedMsg is one message of the dead-letter stream as a get returns it.
type storedMsg = jsread.Msg

// scan calls each for every message on subject filter ("": any) from
// sequence from through upTo, in order, until each returns false.
func (s *Store) scan(ctx context.Context, stream jetstream.Stream, filter string, from, upTo uint64, each func(storedMsg) bool) error {
	if stream.CachedInfo().Config.AllowDirect {
		if err := jsread.Scan(ctx, s.js.Conn(), stream.CachedInfo().Config.Name, filter, jsread.From{Seq: from}, upTo, "dead letters", each); err != nil {
			return fmt.Errorf("dlq: %w", err)
		}
		return nil
	}
	if filter == "" {
		// A get without a subject is by sequence alone: a deleted
		// record would end the scan. The next on any subject steps over.
		filter = ">"
	}
	for from <= upTo {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dlq: reading dead letters stopped: %w", err)
		}
		rctx, cancel := context.WithTimeout(ctx, readWait)
		m, err := stream.GetMsg(rctx, from, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dlq: read from entry %d: %w", from, err)
		}
		if m.Sequence > upTo || !each(storedMsg{Seq: m.Sequence, Subject: m.Subject, Header: m.Header, Data: m.Data}) {
			return nil
		}
		from = m.Sequence + 1
	}
	return nil
}
