package replicator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"spoolsync/synclog"
)

// Collector exposes the channels' status as Prometheus metrics, read at
// scrape time from the same numbers `spoolsync status` shows.
type Collector struct{ r *Replicator }

// NewCollector returns a collector for r.
func NewCollector(r *Replicator) *Collector { return &Collector{r: r} }

var (
	mConnected = prometheus.NewDesc("spoolsync_channel_connected", "1 while the channel is connected to its replica.", []string{"channel", "replica"}, nil)
	mLag       = prometheus.NewDesc("spoolsync_channel_lag_seconds", "Age of the oldest event the replica has not acknowledged.", []string{"channel"}, nil)
	mBacklog   = prometheus.NewDesc("spoolsync_channel_backlog_events", "Events logged but not acknowledged by the replica.", []string{"channel"}, nil)
	mBatches   = prometheus.NewDesc("spoolsync_channel_batches_total", "Batches acknowledged.", []string{"channel"}, nil)
	mEvents    = prometheus.NewDesc("spoolsync_channel_events_total", "Events shipped and acknowledged.", []string{"channel"}, nil)
	mPayload   = prometheus.NewDesc("spoolsync_channel_payload_bytes_total", "Content bytes the acknowledged batches stand for.", []string{"channel"}, nil)
	mSent      = prometheus.NewDesc("spoolsync_channel_content_bytes_sent_total", "Content bytes that crossed the wire (before compression).", []string{"channel"}, nil)
	mWire      = prometheus.NewDesc("spoolsync_channel_wire_bytes_total", "Bytes sent on the wire, after compression and TLS.", []string{"channel"}, nil)
	mDedup     = prometheus.NewDesc("spoolsync_channel_dedup_hits_total", "Puts satisfied by content the replica already had (GUID).", []string{"channel"}, nil)
	mLastAck   = prometheus.NewDesc("spoolsync_channel_last_ack_timestamp_seconds", "When the replica last acknowledged a batch.", []string{"channel"}, nil)
	mDiverged  = prometheus.NewDesc("spoolsync_channel_diverged_entries", "Entries the last continuous verify found different on the replica (sync_verify_interval).", []string{"channel"}, nil)
	mVerified  = prometheus.NewDesc("spoolsync_channel_verified_timestamp_seconds", "When the last continuous verify of the replica completed.", []string{"channel"}, nil)
	mInSync    = prometheus.NewDesc("spoolsync_channel_in_sync", "1 when the backlog is 0, no resync is owed and the last verify found no difference.", []string{"channel"}, nil)
	mNoAnswer  = prometheus.NewDesc("spoolsync_channel_no_answer_seconds", "Seconds since a replica that stopped answering the heartbeat was last heard; 0 while it answers.", []string{"channel"}, nil)
	mFenced    = prometheus.NewDesc("spoolsync_channel_fenced", "1 while the replica refuses this master as fenced (it was promoted): nothing ships.", []string{"channel"}, nil)
	mResync    = prometheus.NewDesc("spoolsync_channel_resync_owed", "1 while a resync of some directories (after an unclean stop, a refused batch) is asked for and not done.", []string{"channel"}, nil)
	mDegraded  = prometheus.NewDesc("spoolsync_channel_sync_degraded", "sync_mode sync: 1 while fsync does not wait for this replica (it did not confirm within sync_timeout and has not caught up).", []string{"channel"}, nil)
)

// newLagHistogram is the distribution of replication lag: for each event
// the replica acknowledged, the time from its being logged to the ack.
// The lag gauge is the worst now; this says how long changes usually wait
// (from 1 ms to about 4.5 hours: a replica back from an outage).
func newLagHistogram() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "spoolsync_channel_replication_lag_seconds",
		Help:    "Time from an event being logged to the replica acknowledging it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 12)}, []string{"channel"})
}

// observeLag records the lag of each acknowledged event.
func observeLag(o prometheus.Observer, evs []*synclog.Event) {
	if o == nil {
		return
	}
	now := time.Now()
	for _, ev := range evs {
		o.Observe(now.Sub(time.Unix(0, ev.Time)).Seconds())
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.r.lagSeconds.Describe(ch)
	for _, d := range []*prometheus.Desc{mConnected, mLag, mBacklog, mBatches, mEvents, mPayload, mSent, mWire, mDedup, mLastAck, mDegraded, mDiverged, mVerified, mInSync, mNoAnswer, mFenced, mResync} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.r.lagSeconds.Collect(ch)
	for _, s := range c.r.Status() {
		ch <- prometheus.MustNewConstMetric(mFenced, prometheus.GaugeValue, boolGauge(s.Fenced), s.Name)
		ch <- prometheus.MustNewConstMetric(mResync, prometheus.GaugeValue, boolGauge(s.ResyncOwed != ""), s.Name)
		connected := 0.0
		if s.Connected {
			connected = 1
		}
		ch <- prometheus.MustNewConstMetric(mConnected, prometheus.GaugeValue, connected, s.Name, s.Replica)
		ch <- prometheus.MustNewConstMetric(mLag, prometheus.GaugeValue, s.LagSeconds, s.Name)
		ch <- prometheus.MustNewConstMetric(mBacklog, prometheus.GaugeValue, float64(s.BacklogEvents), s.Name)
		ch <- prometheus.MustNewConstMetric(mBatches, prometheus.CounterValue, float64(s.Batches), s.Name)
		ch <- prometheus.MustNewConstMetric(mEvents, prometheus.CounterValue, float64(s.Events), s.Name)
		ch <- prometheus.MustNewConstMetric(mPayload, prometheus.CounterValue, float64(s.PayloadBytes), s.Name)
		ch <- prometheus.MustNewConstMetric(mSent, prometheus.CounterValue, float64(s.ContentBytes), s.Name)
		ch <- prometheus.MustNewConstMetric(mWire, prometheus.CounterValue, float64(s.WireBytes), s.Name)
		ch <- prometheus.MustNewConstMetric(mDedup, prometheus.CounterValue, float64(s.DedupHits), s.Name)
		ch <- prometheus.MustNewConstMetric(mNoAnswer, prometheus.GaugeValue, s.NoAnswerSeconds, s.Name)
		if s.SyncMode != "" {
			degraded := 0.0
			if s.SyncMode == "degraded" {
				degraded = 1
			}
			ch <- prometheus.MustNewConstMetric(mDegraded, prometheus.GaugeValue, degraded, s.Name)
		}
		inSync := 0.0
		if s.InSync {
			inSync = 1
		}
		ch <- prometheus.MustNewConstMetric(mInSync, prometheus.GaugeValue, inSync, s.Name)
		ch <- prometheus.MustNewConstMetric(mDiverged, prometheus.GaugeValue, float64(s.DivergedEntries), s.Name)
		if !s.VerifiedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(mVerified, prometheus.GaugeValue, float64(s.VerifiedAt.UnixNano())/1e9, s.Name)
		}
		if !s.LastAck.IsZero() {
			ch <- prometheus.MustNewConstMetric(mLastAck, prometheus.GaugeValue, float64(s.LastAck.UnixNano())/1e9, s.Name)
		}
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
