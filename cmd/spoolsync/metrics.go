package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveRegistry serves reg, with the Go runtime's and the process's
// metrics, as Prometheus /metrics on addr (metrics_listen) until ctx is
// done.
func serveRegistry(ctx context.Context, wg *sync.WaitGroup, addr string, reg *prometheus.Registry, logger *slog.Logger) error {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics_listen %s: %w (another process on that port? choose another address)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	wg.Go(func() { srv.Serve(ln) })
	wg.Go(func() {
		<-ctx.Done()
		srv.Close()
	})
	logger.Info("serving metrics", "listen", ln.Addr().String())
	return nil
}

// roots lists the replica trees served, for the server's epoch and disk
// metrics: the root, and with --per-master each master's tree opened so
// far.
func (ts *treeSet) roots() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := []string{ts.sc.root}
	for root := range ts.stores {
		if root != ts.sc.root {
			out = append(out, root)
		}
	}
	slices.Sort(out[1:])
	return out
}
