package deliveries

import (
	"crypto/sha256"
	hexenc "encoding/hex"
	"strings"
	"testing"
)

// Bucket and Subject are the first two bytes of the id's SHA-256 in hex,
// for ids short and long (past the stack buffers), and Subject makes one
// string per record for an id and prefix of the usual size.
func TestSubjectIsTheBucketUnderThePrefix(t *testing.T) {
	key := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		return hexenc.EncodeToString(sum[:2])
	}
	for _, id := range []string{"", "evt-1", "0193f7a2-6c1e-7d3b-9a51-2f4e8c0b1d77", "a.b *>", strings.Repeat("é", 40), strings.Repeat("x", 1000)} {
		for _, prefix := range []string{"CHAPAR", "", strings.Repeat("p", 200)} {
			if got, want := Subject(prefix, id), prefix+".deliveries."+key(id); got != want {
				t.Errorf("Subject(%q, %q) = %q, want %q", prefix, id, got, want)
			}
		}
		if got := Bucket(id); got != key(id) || len(got) != bucketLen {
			t.Errorf("Bucket(%q) = %q, want %q", id, got, key(id))
		}
	}
	id := "0193f7a2-6c1e-7d3b-9a51-2f4e8c0b1d77"
	if n := testing.AllocsPerRun(100, func() { _ = Subject("CHAPAR", id) }); n > 1 {
		t.Errorf("Subject allocates %.0f times, want at most 1", n)
	}
}

func FuzzSubject(f *testing.F) {
	f.Add("CHAPAR", "evt-1")
	f.Fuzz(func(t *testing.T, prefix, id string) {
		sum := sha256.Sum256([]byte(id))
		if got, want := Subject(prefix, id), prefix+".deliveries."+hexenc.EncodeToString(sum[:2]); got != want {
			t.Errorf("Subject(%q, %q) = %q, want %q", prefix, id, got, want)
		}
	})
}
