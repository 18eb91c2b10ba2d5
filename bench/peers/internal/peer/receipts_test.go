package peer

import "testing"

// The js-ceiling reads an event's sequence and publish stamp without
// decoding it; what it reads must be what the bench wrote (json.Marshal's
// sorted properties), probes (negative sequences) included.
func TestStampReadsTheBenchProperties(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		seq  int
		sent int64
		ok   bool
	}{
		{`{"data":{"name":"order_paid","properties":{"benchSeq":42,"firstOrder":true,"items":3,"orderId":"A-42","sentAt":"1765000000123456789"}}}`, 42, 1765000000123456789, true},
		{`{"data":{"properties":{"benchSeq":-1,"sentAt":"7"}}}`, -1, 7, true},
		{`{"data":{"properties":{"sentAt":"7"}}}`, 0, 0, false},
		{`{"data":{"properties":{"benchSeq":3}}}`, 0, 0, false},
	} {
		seq, sent, ok := Stamp([]byte(tc.raw))
		if ok != tc.ok || ok && (seq != tc.seq || sent != tc.sent) {
			t.Errorf("Stamp(%s) = %d, %d, %v; want %d, %d, %v", tc.raw, seq, sent, ok, tc.seq, tc.sent, tc.ok)
		}
	}
}
