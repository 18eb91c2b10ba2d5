package dispatch_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// gatewayBodies is what the Metrix gateway accepted, request by request:
// the user and the event ids of each (the user's own record left out).
func gatewayBodies(t *testing.T, vendor *emulator.Vendor) (users []string, ids [][]string) {
	t.Helper()
	for _, r := range vendor.Requests() {
		if r.Status != 200 {
			continue
		}
		var body struct {
			CustomUserID string
			Messages     []struct{ ID string }
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range body.Messages {
			if !strings.HasSuffix(m.ID, ":user") {
				got = append(got, m.ID)
			}
		}
		users, ids = append(users, body.CustomUserID), append(ids, got)
	}
	return users, ids
}

// checkUsersOrder fails t unless each user's events reached the gateway
// (requests' users and ids, gatewayBodies) once each, in publish order.
func checkUsersOrder(t *testing.T, order map[string][]string, users []string, ids [][]string) {
	t.Helper()
	seen := map[string][]string{}
	for i, u := range users {
		seen[u] = append(seen[u], ids[i]...)
	}
	broken := 0
	for u, want := range order {
		if strings.Join(seen[u], " ") != strings.Join(want, " ") {
			if broken++; broken <= 3 {
				t.Errorf("user %s: delivered\n %v\nwant (publish order, each once)\n %v", u, seen[u], want)
			}
		}
	}
	if broken > 0 {
		t.Errorf("%d of %d users' events delivered out of order or not once", broken, len(order))
	}
}

// publishBacklog publishes users × perUser tracks without waiting for each
// ack, as a backlog comes, and returns each user's ids in publish order.
func publishBacklog(t *testing.T, e *testenv.Env, users, perUser int) map[string][]string {
	t.Helper()
	order := map[string][]string{}
	for i := range users * perUser {
		u := fmt.Sprintf("u%d", i%users)
		// The user as the subject: the partition key, so a user's events
		// share a partition and their order holds across partitions.
		env := testenv.Track(t, "order_paid", u, envelope.WithSubject(u))
		order[u] = append(order[u], env.ID)
		raw, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.JS.PublishAsync(e.Topo.EventSubjectFor(env.Type, env.PartitionKey()), raw, jetstream.WithMsgID(env.ID)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-e.JS.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
	return order
}

// The end of a backlog does not wait out max_wait: once the window has been
// full, what it holds when the consumer has nothing more pending leaves as
// if the window were full. Before, the last window of every backlog waited
// max_wait (here a minute) for events that were never coming. Order and
// batching are what they were.
func TestKeyedBatchABacklogsEndDoesNotWaitOutMaxWait(t *testing.T) {
	for _, partitions := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d partitions", partitions), func(t *testing.T) {
			e := testenv.NewPartitioned(t, partitions)
			sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, time.Minute)
			sink.Concurrency = 4
			sink.MaxAckPending = 300 // a window of 264 events: the backlog fills it
			vendor := e.Emu.Vendor(emulator.MetrixGateway)
			start := func() *testenv.Dispatcher {
				return e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
					func(c *config.Dispatcher) { c.AckWait = 5 * time.Minute })
			}
			// A backlog: published while the dispatcher is stopped (after a
			// first start made the sink's consumer), so the consumer hands
			// the first events over with all the others pending behind
			// them, however fast the machine publishes.
			if err := start().Stop(); err != nil {
				t.Fatal(err)
			}
			const users, perUser = 40, 25
			order := publishBacklog(t, e, users, perUser)
			d := start()
			// Well inside max_wait: the last window would have waited a minute.
			testenv.Eventually(t, 30*time.Second, "every event delivered before max_wait", func() bool {
				return d.Tally.DeliveredTo("gateway") == users*perUser
			})
			reqUsers, reqIDs := gatewayBodies(t, vendor)
			checkUsersOrder(t, order, reqUsers, reqIDs)
			if per := float64(users*perUser) / float64(max(len(reqUsers), 1)); per < 2 {
				t.Errorf("%.1f events per request (%d requests for %d events), want at least 2: the window still batches", per, len(reqUsers), users*perUser)
			}
		})
	}
}
