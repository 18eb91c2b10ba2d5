package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestVersionPrecedence(t *testing.T) {
	build := func(main string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{GoVersion: "go1.99", Main: debug.Module{Version: main}, Settings: settings}, true
		}
	}
	rev := debug.BuildSetting{Key: "vcs.revision", Value: "0123456789abcdef0123"}
	dirty := debug.BuildSetting{Key: "vcs.modified", Value: "true"}
	for _, tc := range []struct {
		name, stamped, want string
		read                func() (*debug.BuildInfo, bool)
	}{
		{"ldflags win", "v9.9.9", "v9.9.9", build("v1.0.0", rev)},
		{"module version", "", "v1.0.0", build("v1.0.0", rev)},
		{"devel with revision", "", "devel-0123456789ab-dirty", build("(devel)", rev, dirty)},
		{"devel", "", "devel", build("(devel)")},
		{"no build info", "", "devel", func() (*debug.BuildInfo, bool) { return nil, false }},
	} {
		got := read(tc.stamped, tc.read)
		if got.Version != tc.want {
			t.Errorf("%s: version %q, want %q", tc.name, got.Version, tc.want)
		}
		if got.GoVersion == "" || got.Platform == "" {
			t.Errorf("%s: %+v lacks go version or platform", tc.name, got)
		}
	}
}

func TestReadOfThisBinary(t *testing.T) {
	if v := Version(); v == "" {
		t.Fatal("empty version")
	}
}
