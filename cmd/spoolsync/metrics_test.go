package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"spoolsync/wire"
)

// scrape reads /metrics at addr: each sample as printed ("name{labels}")
// to its value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	must(t, sc.Err())
	return out
}

// TestMetricsBothSides: the standby's server exports what it applied,
// who is connected, refusals and auth failures, its epoch and disk; the
// master exports the replication lag as a histogram.
func TestMetricsBothSides(t *testing.T) {
	rm, mm := freeAddr(t), freeAddr(t)
	r := newReplicaEnv(t, "metrics_listen: "+rm+"\n")
	server, addr := startServer(t, r)
	m := newEnv(t, fmt.Sprintf("sync_host: %s\nsync_authname: master\nsync_password: pw\nmetrics_listen: %s\n", addr, mm))
	p := &pair{m: m, r: r, server: server, addr: addr, mount: startMount(t, m)}
	md := m.mnt + "/Maildir"
	mkMaildir(t, md)
	for i := range 5 {
		deliver(t, md, fmt.Sprintf("%d.host", i), message(i))
	}
	p.waitSynced(t)

	// A wrong password (the client refuses to send mechanisms it does not
	// know: replica/server's TestAuthFailureLabels covers those).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := wire.Dial(ctx, wire.ClientConfig{Addr: addr, AuthName: "master", Password: "wrong"})
	cancel()
	if err == nil {
		c.Close()
		t.Fatal("a wrong password authenticated")
	}

	s := scrape(t, rm)
	root := `{root="` + r.root + `"}`
	for name, ok := range map[string]func(float64) bool{
		"spoolsync_server_masters_connected":                      func(v float64) bool { return v >= 1 }, // the mount; a first-contact resync's connection may linger
		"spoolsync_server_batches_applied_total":                  func(v float64) bool { return v >= 1 },
		"spoolsync_server_ops_applied_total":                      func(v float64) bool { return v >= 1 },
		"spoolsync_server_bytes_applied_total":                    func(v float64) bool { return v > 0 },
		"spoolsync_server_batch_apply_seconds_count":              func(v float64) bool { return v >= 1 },
		`spoolsync_server_auth_failures_total{mechanism="PLAIN"}`: func(v float64) bool { return v == 1 },
		"spoolsync_server_epoch" + root:                           func(v float64) bool { return v == 0 },
		"spoolsync_server_disk_free_bytes" + root:                 func(v float64) bool { return v > 0 },
		"spoolsync_server_disk_size_bytes" + root:                 func(v float64) bool { return v >= s["spoolsync_server_disk_free_bytes"+root] },
	} {
		v, found := s[name]
		if !found || !ok(v) {
			t.Errorf("server /metrics: %s = %v (present %v)", name, v, found)
		}
	}
	ms := scrape(t, mm)
	if v := ms[`spoolsync_channel_replication_lag_seconds_count{channel="default"}`]; v < 1 {
		t.Errorf("master's lag histogram counts %v events, want the deliveries' events", v)
	}
	if t.Failed() {
		t.Logf("server log:\n%s", server.stderr)
	}
}
