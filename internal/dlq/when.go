package dlq

import (
	"fmt"
	"time"
)

// ParseWhen reads a filter's time bound: RFC 3339, a browser's
// datetime-local value (2006-01-02T15:04, taken as UTC), or a duration
// back from now (24h). Empty is no bound (the zero time).
func ParseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 24h", s)
	}
	return now.Add(-d), nil
}
