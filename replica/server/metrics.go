package server

import (
	"time"

	"github.com/emersion/go-sasl"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/wire"
)

// Metrics are the replica daemon's Prometheus metrics (metrics_listen on
// the standby). Counters are updated as batches are applied and masters
// refused; the gauges (masters connected, each tree's epoch and free disk)
// are read at scrape time. A nil *Metrics counts nothing, so the Server
// runs the same without it.
type Metrics struct {
	srv   *Server
	roots func() []string

	batches      prometheus.Counter
	ops          prometheus.Counter
	bytes        prometheus.Counter
	applySeconds prometheus.Histogram
	refusals     *prometheus.CounterVec
	authFailures *prometheus.CounterVec
}

var (
	mMasters  = prometheus.NewDesc("spoolsync_server_masters_connected", "Masters connected and authenticated now.", nil, nil)
	mEpoch    = prometheus.NewDesc("spoolsync_server_epoch", "The replica tree's epoch (raised by promote and by a failback master).", []string{"root"}, nil)
	mDiskFree = prometheus.NewDesc("spoolsync_server_disk_free_bytes", "Bytes free to spoolsync (root) on the filesystem of the replica tree.", []string{"root"}, nil)
	mDiskSize = prometheus.NewDesc("spoolsync_server_disk_size_bytes", "Size of the filesystem of the replica tree.", []string{"root"}, nil)
)

// NewMetrics makes the metrics; Register them once the Server exists.
// roots lists the replica trees served (one, or one per master), for the
// epoch and disk gauges.
func NewMetrics(roots func() []string) *Metrics {
	return &Metrics{
		roots: roots,
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "spoolsync_server_batches_applied_total",
			Help: "Batches applied and acknowledged."}),
		ops: prometheus.NewCounter(prometheus.CounterOpts{Name: "spoolsync_server_ops_applied_total",
			Help: "Operations (puts, renames, unlinks...) in the batches applied."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "spoolsync_server_bytes_applied_total",
			Help: "Content bytes the batches applied carried."}),
		// From 1 ms (a few chmods) to a minute (a batch of large files on
		// a slow disk): the apply includes the syncfs that makes it durable.
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "spoolsync_server_batch_apply_seconds",
			Help:    "Time to apply a batch and make it durable, from its end arriving to its ack.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spoolsync_server_refusals_total",
			Help: "Connections ended with an error sent to the master, by wire error code (fenced, apply, missing, ...)."}, []string{"code"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spoolsync_server_auth_failures_total",
			Help: "Refused authentications, by SASL mechanism (PLAIN, EXTERNAL, or other)."}, []string{"mechanism"}),
	}
}

// Register adds the metrics of s to reg.
func (m *Metrics) Register(reg prometheus.Registerer, s *Server) error {
	m.srv = s
	for _, c := range []prometheus.Collector{m.batches, m.ops, m.bytes, m.applySeconds, m.refusals, m.authFailures, m} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// AuthFailed counts a refused authentication (wire.ServerConfig.AuthFailed).
// The mechanism is the client's word: anything but the two offered is
// "other", so a client cannot grow the label set.
func (m *Metrics) AuthFailed(mech string) {
	if m == nil {
		return
	}
	if mech != sasl.Plain && mech != sasl.External {
		mech = "other"
	}
	m.authFailures.WithLabelValues(mech).Inc()
}

func (m *Metrics) batchApplied(ops, bytes uint64, took time.Duration) {
	if m == nil {
		return
	}
	m.batches.Inc()
	m.ops.Add(float64(ops))
	m.bytes.Add(float64(bytes))
	m.applySeconds.Observe(took.Seconds())
}

func (m *Metrics) refused(code wire.Code) {
	if m == nil {
		return
	}
	m.refusals.WithLabelValues(code.String()).Inc()
}

// Describe implements prometheus.Collector for the scrape-time gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- mMasters
	ch <- mEpoch
	ch <- mDiskFree
	ch <- mDiskSize
}

// Collect implements prometheus.Collector for the scrape-time gauges. A
// tree whose epoch or filesystem cannot be read is left out: the alert on
// a missing series (absent) is the operator's, not a made-up value.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if m.srv != nil {
		m.srv.mu.Lock()
		n := len(m.srv.sessions)
		m.srv.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(mMasters, prometheus.GaugeValue, float64(n))
	}
	if m.roots == nil {
		return
	}
	for _, root := range m.roots() {
		if st, err := fence.Read(root, fence.Replica); err == nil {
			ch <- prometheus.MustNewConstMetric(mEpoch, prometheus.GaugeValue, float64(st.Epoch), root)
		}
		var fs unix.Statfs_t
		if err := unix.Statfs(root, &fs); err == nil {
			// Bfree, not Bavail: the server runs as root, which may use
			// the blocks reserved for root.
			ch <- prometheus.MustNewConstMetric(mDiskFree, prometheus.GaugeValue, float64(fs.Bfree)*float64(fs.Bsize), root)
			ch <- prometheus.MustNewConstMetric(mDiskSize, prometheus.GaugeValue, float64(fs.Blocks)*float64(fs.Bsize), root)
		}
	}
}
