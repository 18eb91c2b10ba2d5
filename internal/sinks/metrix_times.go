package sinks

import "sync"

// metrixTimes keeps one user's Metrix messages at distinct times. Metrix
// drops a second message of one user with the same time (vendor digest,
// section 3), and the auto-registration user message needs a time of its
// own: 1 ms before its event could be the time of that user's previous
// event. So each sink remembers, per user, the times of the messages it
// built recently, and gives a user message the latest free time before its
// event (the same one again when the same event is retried).
//
// The memory is per process and bounded, so it cannot see a message
// another replica sent, or an older event that arrives after a newer one
// took its time; it removes the common case, events of one user close
// together in one sink.
type metrixTimes struct {
	mu    sync.Mutex
	users map[string]map[int64]string // user → time → message id
}

const (
	metrixTimesUsers   = 10_000
	metrixTimesPerUser = 64
)

// use records that message id of user is at t.
func (m *metrixTimes) use(user string, t int64, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.useLocked(user, t, id)
}

func (m *metrixTimes) useLocked(user string, t int64, id string) {
	if m.users == nil {
		m.users = map[string]map[int64]string{}
	}
	times, ok := m.users[user]
	if !ok {
		if len(m.users) >= metrixTimesUsers {
			for u := range m.users { // forget one user, any
				delete(m.users, u)
				break
			}
		}
		times = map[int64]string{}
		m.users[user] = times
	}
	if len(times) >= metrixTimesPerUser {
		oldest := t
		for x := range times {
			oldest = min(oldest, x)
		}
		delete(times, oldest)
	}
	times[t] = id
}

// before picks and records the time of message id, the latest before at
// that no other recent message of user has.
func (m *metrixTimes) before(user string, at int64, id string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := at - 1
	for {
		other, taken := m.users[user][t]
		if !taken || other == id {
			break
		}
		t--
	}
	m.useLocked(user, t, id)
	return t
}
