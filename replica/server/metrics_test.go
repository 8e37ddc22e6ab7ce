package server

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestAuthFailureLabels: a client names its mechanism; whatever it sends,
// the label is one of three, so a hostile client cannot make the metric
// grow without bound.
func TestAuthFailureLabels(t *testing.T) {
	m := NewMetrics(nil)
	reg := prometheus.NewRegistry()
	if err := m.Register(reg, nil); err != nil {
		t.Fatal(err)
	}
	for _, mech := range []string{"PLAIN", "EXTERNAL", "CRAM-MD5", "x\x00y", strings.Repeat("A", 1000), "PLAIN"} {
		m.AuthFailed(mech)
	}
	want := `
# HELP spoolsync_server_auth_failures_total Refused authentications, by SASL mechanism (PLAIN, EXTERNAL, or other).
# TYPE spoolsync_server_auth_failures_total counter
spoolsync_server_auth_failures_total{mechanism="EXTERNAL"} 1
spoolsync_server_auth_failures_total{mechanism="PLAIN"} 2
spoolsync_server_auth_failures_total{mechanism="other"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "spoolsync_server_auth_failures_total"); err != nil {
		t.Error(err)
	}
	var nilMetrics *Metrics // a Server without metrics_listen
	nilMetrics.AuthFailed("PLAIN")
	nilMetrics.refused(0)
	nilMetrics.batchApplied(1, 1, 0)
}
