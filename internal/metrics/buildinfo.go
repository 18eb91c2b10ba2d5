package metrics

import "github.com/prometheus/client_golang/prometheus"

// SetBuildInfo exports chapar_build_info{version,go_version} 1, the
// Prometheus convention for joining a build's version onto other series.
// Call it once; later calls replace the labels.
func (m *Metrics) SetBuildInfo(version, goVersion string) {
	m.buildInfoMu.Lock()
	defer m.buildInfoMu.Unlock()
	if m.buildInfo != nil {
		m.reg.Unregister(m.buildInfo)
	}
	m.buildInfo = prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "chapar_build_info",
		Help:        "The running build: always 1, with the version and the Go version as labels.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": goVersion},
	})
	m.buildInfo.Set(1)
	m.reg.MustRegister(m.buildInfo)
}
