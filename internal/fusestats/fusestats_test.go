package fusestats

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// notRequests are the RawFileSystem methods that serve no request.
var notRequests = map[string]bool{"String": true, "SetDebug": true, "Init": true, "OnUnmount": true}

// TestEveryRequestCounted calls each request method of fuse.RawFileSystem
// through the wrapper and wants exactly one more count each time: a method
// the wrapper lacks (one a go-fuse upgrade added) would pass through
// uncounted and fail here.
func TestEveryRequestCounted(t *testing.T) {
	c := new(Counter)
	w := reflect.ValueOf(Wrap(fuse.NewDefaultRawFileSystem(), c))
	iface := reflect.TypeFor[fuse.RawFileSystem]()
	total := func() (n uint64) {
		for _, v := range c.Snapshot() {
			n += v
		}
		return n
	}
	for i := range iface.NumMethod() {
		m := iface.Method(i)
		if notRequests[m.Name] {
			continue
		}
		args := make([]reflect.Value, m.Type.NumIn())
		for j := range args {
			args[j] = reflect.Zero(m.Type.In(j))
		}
		before := total()
		w.MethodByName(m.Name).Call(args)
		if got := total() - before; got != 1 {
			t.Errorf("%s: counted %d times, want 1", m.Name, got)
		}
	}
}

func TestSnapshotNames(t *testing.T) {
	c := new(Counter)
	raw := Wrap(fuse.NewDefaultRawFileSystem(), c)
	raw.GetAttr(nil, &fuse.GetAttrIn{}, &fuse.AttrOut{})
	raw.GetAttr(nil, &fuse.GetAttrIn{}, &fuse.AttrOut{})
	raw.Write(nil, &fuse.WriteIn{}, nil)
	raw.Writev(nil, &fuse.WriteIn{}, nil)
	got := c.Snapshot()
	want := map[string]uint64{"GETATTR": 2, "WRITE": 2}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot = %v, want %v", got, want)
	}
}

type dump struct {
	Dumps int               `json:"dumps"`
	Ops   map[string]uint64 `json:"ops"`
}

func readDump(t *testing.T, name string) dump {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var d dump
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v: %q", name, err, b)
	}
	return d
}

// TestFromEnv: off without the variable; with it, SIGUSR1 and the stop
// function write the counts so far.
func TestFromEnv(t *testing.T) {
	base := fuse.NewDefaultRawFileSystem()
	t.Setenv(Env, "")
	if raw, stop := FromEnv(base, nil); raw != base {
		t.Errorf("FromEnv without %s wrapped the filesystem", Env)
	} else {
		stop()
	}

	name := filepath.Join(t.TempDir(), "stats.json")
	t.Setenv(Env, name)
	raw, stop := FromEnv(base, nil)
	defer stop()
	raw.Lookup(nil, &fuse.InHeader{}, "x", &fuse.EntryOut{})
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s written 10 s after SIGUSR1", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := readDump(t, name); d.Dumps != 1 || d.Ops["LOOKUP"] != 1 {
		t.Errorf("after SIGUSR1: %+v, want dumps 1 and LOOKUP 1", d)
	}
	raw.Lookup(nil, &fuse.InHeader{}, "y", &fuse.EntryOut{})
	stop()
	if d := readDump(t, name); d.Dumps != 2 || d.Ops["LOOKUP"] != 2 {
		t.Errorf("after stop: %+v, want dumps 2 and LOOKUP 2", d)
	}
}
