package emulator

import (
	"encoding/json"
	"sync"
)

// Dropped is a message the vendor answered 2xx and then dropped.
type Dropped struct {
	CustomUserID string `json:"customUserId,omitempty"`
	MetrixUserID string `json:"metrixUserId,omitempty"`
	Type         string `json:"type"`
	ID           string `json:"id"`
	Time         int64  `json:"time"`
	// Kept is the id of the earlier message of the same user at the same
	// time, the one the vendor kept.
	Kept string `json:"kept"`
}

// timeline models what the Metrix gateway does after a 2xx (vendor
// digest, section 3, from docs.metrix.ir's API troubleshooting): "events
// of one metrixUserId with the same time are dropped as duplicates". The
// emulator is stricter than the page, so a test cannot pass by luck of
// which id the vendor keys on: a message is dropped when an earlier
// message of the same customUserId, or of the same metrixUserId, has the
// same time (each compared only when the request gives it). A message
// whose id the vendor has already seen is its de-duplication by id, not a
// loss: it is ignored, neither kept nor counted as dropped, and a dropped
// message's id counts as seen (a retry of it is not a second chance).
type timeline struct {
	mu      sync.Mutex
	ids     map[string]bool
	byUser  map[[2]string]map[int64]string // {"c"|"m", id} → time → message id kept
	entries int
	dropped []Dropped
}

// timelineMax bounds what the model remembers (ids and times); past it,
// it forgets everything and starts again, so a long benchmark cannot grow
// the emulator without bound. Tests stay far below it.
const timelineMax = 1 << 20

func newTimeline() *timeline { return &timeline{} }

func (tl *timeline) reset() {
	tl.mu.Lock()
	tl.ids, tl.byUser, tl.entries, tl.dropped = nil, nil, 0, nil
	tl.mu.Unlock()
}

func (tl *timeline) list() []Dropped {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]Dropped(nil), tl.dropped...)
}

// accept takes a request the gateway answered 2xx, its messages in order.
func (tl *timeline) accept(body []byte) {
	var req struct {
		CustomUserID string `json:"customUserId"`
		MetrixUserID string `json:"metrixUserId"`
		Messages     []struct {
			Type string `json:"type"`
			ID   string `json:"id"`
			Time int64  `json:"time"`
		} `json:"messages"`
	}
	if json.Unmarshal(body, &req) != nil {
		return // validated before: cannot happen
	}
	var users [][2]string
	if req.CustomUserID != "" {
		users = append(users, [2]string{"c", req.CustomUserID})
	}
	if req.MetrixUserID != "" {
		users = append(users, [2]string{"m", req.MetrixUserID})
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.entries > timelineMax {
		tl.ids, tl.byUser, tl.entries = nil, nil, 0
	}
	if tl.ids == nil {
		tl.ids, tl.byUser = map[string]bool{}, map[[2]string]map[int64]string{}
	}
	for _, m := range req.Messages {
		if tl.ids[m.ID] {
			continue
		}
		tl.ids[m.ID] = true
		tl.entries++
		kept := ""
		for _, u := range users {
			if id, ok := tl.byUser[u][m.Time]; ok {
				kept = id
				break
			}
		}
		if kept != "" {
			tl.dropped = append(tl.dropped, Dropped{
				CustomUserID: req.CustomUserID, MetrixUserID: req.MetrixUserID,
				Type: m.Type, ID: m.ID, Time: m.Time, Kept: kept,
			})
			continue
		}
		for _, u := range users {
			if tl.byUser[u] == nil {
				tl.byUser[u] = map[int64]string{}
			}
			tl.byUser[u][m.Time] = m.ID
			tl.entries++
		}
	}
}
