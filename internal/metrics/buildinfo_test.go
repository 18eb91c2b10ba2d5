package metrics_test

import (
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chapar-dev/chapar/internal/metrics"
)

func TestBuildInfo(t *testing.T) {
	m := metrics.New()
	m.SetBuildInfo("v0.0.1", "go1.0")
	m.SetBuildInfo("v1.2.3", "go1.26.8") // replaces, does not add
	srv := httptest.NewServer(m.Admin(nil, new(atomic.Bool)))
	defer srv.Close()
	_, body := get(t, srv.URL+"/metrics")
	if !strings.Contains(body, `chapar_build_info{go_version="go1.26.8",version="v1.2.3"} 1`) {
		t.Errorf("/metrics lacks chapar_build_info:\n%s", grep(body, "chapar_build_info"))
	}
	if strings.Contains(body, "v0.0.1") {
		t.Error("the first build info is still exported")
	}
}

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
