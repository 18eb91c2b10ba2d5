package dlq_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A header that is missing or does not parse gives an empty log and says
// why (the engine then carries on); a log from elsewhere is brought within
// the bounds.
func TestDecodeAttemptLog(t *testing.T) {
	at := time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC)
	many := make([]string, 12)
	for i := range many {
		many[i] = fmt.Sprintf(`{"at":"2026-11-30T07:00:00Z","status":500,"code":"C%d"}`, i+1)
	}
	for _, c := range []struct {
		name    string
		in      string
		wantErr bool
		total   int
		codes   []string
	}{
		{"missing", "", false, 0, nil},
		{"one attempt", `{"total":1,"attempts":[{"at":"2026-11-30T07:00:00Z","status":503,"code":"X","latency_ms":12}]}`, false, 1, []string{"X"}},
		{"earlier attempts dropped", `{"total":40,"attempts":[{"at":"2026-11-30T07:00:00Z","code":"L"}]}`, false, 40, []string{"L"}},
		{"not JSON", "503,503,400", true, 0, nil},
		{"truncated", `{"total":2,"attempts":[{"at":`, true, 0, nil},
		{"wrong type", `{"total":"two"}`, true, 0, nil},
		{"a bad time", `{"total":1,"attempts":[{"at":"yesterday"}]}`, true, 0, nil},
		{"an array", `[]`, true, 0, nil},
		{"negative total", `{"total":-1,"attempts":[]}`, true, 0, nil},
		{"total below its entries is raised", `{"total":0,"attempts":[{"at":"2026-11-30T07:00:00Z","code":"A"},{"at":"2026-11-30T07:00:00Z","code":"B"}]}`, false, 2, []string{"A", "B"}},
		{"too many entries keep the last", `{"total":12,"attempts":[` + strings.Join(many, ",") + `]}`, false, 12,
			[]string{"C3", "C4", "C5", "C6", "C7", "C8", "C9", "C10", "C11", "C12"}},
		{"oversized text is clipped", `{"total":1,"attempts":[{"at":"2026-11-30T07:00:00Z","code":"` + strings.Repeat("K", 500) + `"}]}`, false, 1,
			[]string{strings.Repeat("K", 64) + "…"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := dlq.DecodeAttemptLog(c.in)
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error: %v", err, c.wantErr)
			}
			var codes []string
			for _, a := range l.Attempts {
				codes = append(codes, a.Code)
				if !a.At.Equal(at) {
					t.Errorf("time %v", a.At)
				}
			}
			if l.Total != c.total || !reflect.DeepEqual(codes, c.codes) {
				t.Errorf("total %d, codes %v; want %d, %v", l.Total, codes, c.total, c.codes)
			}
		})
	}
}

// Add keeps the last MaxLoggedAttempts and the total, and an encoded log
// of the largest entries a vendor can provoke still fits the header
// allowance with room for the producer's headers.
func TestAttemptLogBoundAndSize(t *testing.T) {
	var l dlq.AttemptLog
	hostile := strings.Repeat("\"\\\x00\r\n<é\xff", 400) // escapes, line breaks, invalid UTF-8
	for i := range 25 {
		l.Add(dlq.Attempt{At: time.Now().UTC(), Replay: i / 10, Status: 503,
			// Quotes and backslashes first: each doubles in JSON, the most
			// any byte that survives Add grows.
			Code: strings.Repeat(`\`, 64) + hostile, Error: fmt.Sprintf("%d %s%s", i, strings.Repeat(`"`, 200), hostile), LatencyMS: 1 << 40})
	}
	if l.Total != 25 || len(l.Attempts) != dlq.MaxLoggedAttempts || l.Dropped() != 15 {
		t.Fatalf("total %d, %d logged, %d dropped", l.Total, len(l.Attempts), l.Dropped())
	}
	if !strings.HasPrefix(l.Attempts[0].Error, "15 ") || !strings.HasPrefix(l.Attempts[9].Error, "24 ") {
		t.Errorf("kept %q … %q, want attempts 15 … 24", l.Attempts[0].Error[:3], l.Attempts[9].Error[:3])
	}
	enc := l.Encode()
	if strings.ContainsAny(enc, "\r\n\x00") {
		t.Error("the encoded log would break a header line")
	}
	if len(enc) > topology.HeaderAllowance/2 {
		t.Errorf("worst-case log is %d bytes, over half the %d-byte header allowance", len(enc), topology.HeaderAllowance)
	}
	back, err := dlq.DecodeAttemptLog(enc)
	if err != nil || !reflect.DeepEqual(stripMono(back), stripMono(l)) {
		t.Errorf("decode(encode(log)) differs: %v", err)
	}
	t.Logf("worst-case encoded log: %d bytes", len(enc))
}

// stripMono drops the monotonic clock reading, which JSON does not carry.
func stripMono(l dlq.AttemptLog) dlq.AttemptLog {
	l = l.Clone()
	for i := range l.Attempts {
		l.Attempts[i].At = l.Attempts[i].At.Round(0)
	}
	return l
}

// A record's attempt log survives the dead-letter stream, and a replay
// carries it to the sink's queue so the next dead letter continues it.
func TestAttemptLogRoundTripAndReplay(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	at := time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC)
	var log dlq.AttemptLog
	log.Add(dlq.Attempt{At: at, Status: 503, Code: "UNAVAILABLE", Error: "transient failure: HTTP 503", LatencyMS: 40})
	log.Add(dlq.Attempt{At: at.Add(time.Second), Status: 400, Code: "BAD_FIELD", Error: "vendor rejected: HTTP 400", LatencyMS: 12})
	rec := &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, Code: "BAD_FIELD", Attempts: 2,
		EventID: "e-1", Origin: 7, LastAttempt: at.Add(time.Second), Log: log, Data: []byte(`{}`)}
	if _, err := dlq.NewWriter(e.JS, e.Topo).Write(ctx, rec); err != nil {
		t.Fatal(err)
	}
	st := dlq.NewStore(e.JS, e.Topo)
	got, err := st.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Log, log) {
		t.Errorf("read back %+v, want %+v", got.Log, log)
	}
	if _, ok := got.Header[topology.HeaderAttemptLog]; ok {
		t.Error("the log is listed among the original headers too")
	}

	if err := st.Requeue(ctx, got); err != nil {
		t.Fatal(err)
	}
	stream, err := e.JS.Stream(ctx, e.Topo.RetriesStream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, e.Topo.RetryDueSubject("chabok"))
	if err != nil {
		t.Fatal(err)
	}
	carried, err := dlq.DecodeAttemptLog(m.Header.Get(topology.HeaderAttemptLog))
	if err != nil || !reflect.DeepEqual(carried, log) {
		t.Errorf("replay carries %+v (%v), want %+v", carried, err, log)
	}
	if m.Header.Get(topology.HeaderReplays) != "1" {
		t.Errorf("replay count %q", m.Header.Get(topology.HeaderReplays))
	}
}
