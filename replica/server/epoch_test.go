package server

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"strings"
	"testing"

	"spoolsync/internal/testenv"

	"spoolsync/fence"
	"spoolsync/wire"
)

// dialEpoch logs in as master with epoch e and asks for a position (a
// refused master learns it there at the latest).
func (ts *testServer) dialEpoch(e uint64) error {
	cn, sn := net.Pipe()
	go ts.srv.ServeConn(sn)
	c, err := wire.Client(context.Background(), cn, wire.ClientConfig{AuthName: "master", Password: "pw", Epoch: e})
	if err != nil {
		return err
	}
	defer c.Close()
	// Sent while reading: a refusal's Error frame is already on its way,
	// and net.Pipe has no buffer.
	go func() {
		if c.Send(&wire.PositionRequest{}) == nil {
			c.Flush()
		}
	}()
	_, err = c.Recv()
	return err
}

// TestEpochJumpRefused: an admin identity cannot fence the real master
// for good by claiming a huge epoch (issue 15: 2^64-1 was adopted, and
// promote then wrapped to 0). A failback's +1 is adopted and logged with
// the identity; a bigger jump only when the operator said to expect it.
func TestEpochJumpRefused(t *testing.T) {
	var logs testenv.Buffer
	var accept uint64
	ts := newTestServer(t, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	epoch := func() uint64 {
		st, err := fence.Read(ts.root, fence.Replica)
		if err != nil {
			t.Fatal(err)
		}
		return st.Epoch
	}
	for _, e := range []uint64{math.MaxUint64, math.MaxUint64 - 1, 7} {
		err := ts.dialEpoch(e)
		var pe *wire.ProtoError
		if !errors.As(err, &pe) || !strings.Contains(pe.Msg, "--accept-epoch") {
			t.Errorf("epoch %d: %v, want a refusal naming --accept-epoch", e, err)
		}
		if got := epoch(); got != 0 {
			t.Fatalf("after a master of epoch %d: the tree is at %d, want 0", e, got)
		}
	}
	if err := ts.dialEpoch(1); err != nil {
		t.Fatalf("failback to epoch 1: %v", err)
	}
	if got := epoch(); got != 1 {
		t.Fatalf("after failback: epoch %d, want 1", got)
	}
	if l := logs.String(); !strings.Contains(l, "identity=master") || !strings.Contains(l, "newer epoch") {
		t.Errorf("the adoption was not logged with the identity:\n%s", l)
	}
	accept = 7
	ts.srv.opts.AcceptEpoch = accept
	if err := ts.dialEpoch(7); err != nil {
		t.Fatalf("epoch 7 with --accept-epoch 7: %v", err)
	}
	if got := epoch(); got != 7 {
		t.Errorf("after the accepted jump: epoch %d, want 7", got)
	}
}
