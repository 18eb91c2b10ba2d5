// Package buildinfo says which build of Chapar is running: the version
// stamped by the linker, or else the one Go recorded in the binary.
//
//	go build -ldflags "-X github.com/chapar-dev/chapar/internal/buildinfo.version=v1.2.3" ./cmd/dispatcher
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// version is set with -ldflags -X; empty means "ask the binary".
var version string

// Info is what `dispatcher version --json` prints.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// Read returns the running binary's build information.
func Read() Info {
	return read(version, debug.ReadBuildInfo)
}

// Version is Read().Version: the one string logs, metrics and the CLI show.
func Version() string { return Read().Version }

func read(stamped string, readBuild func() (*debug.BuildInfo, bool)) Info {
	info := Info{Version: stamped, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := readBuild()
	if ok {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
	}
	if info.Version == "" {
		// A build from a work tree without VCS stamping (go run, -buildvcs=false).
		info.Version = "devel"
		if info.Revision != "" {
			info.Version += "-" + short(info.Revision)
			if info.Modified {
				info.Version += "-dirty"
			}
		}
	}
	return info
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
