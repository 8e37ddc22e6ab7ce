// Package contrib holds what an installation takes from the source tree
// besides the binary: systemd units (systemd/), Prometheus alerting rules
// (prometheus/) and a Grafana dashboard (grafana/). These tests check them
// with the tools that will read them (systemd-analyze, promtool) and
// against the metrics the code exports.
package contrib_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"spoolsync/config"
	"spoolsync/internal/testenv"
	"spoolsync/replica/server"
	"spoolsync/replicator"
	"spoolsync/synclog"
)

// units parses a systemd unit file into section.key -> values (a key set
// twice keeps both, as systemd appends most list settings).
func units(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || l[0] == '#':
		case l[0] == '[':
			section = strings.Trim(l, "[]")
		default:
			k, v, _ := strings.Cut(l, "=")
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// TestSystemdUnits: systemd-analyze verify accepts the units, and they
// say what the mount needs: notify with a watchdog, before the mail
// services, after its directories' filesystems, and no hardening option
// that would hide the FUSE mount from the mail services in a mount
// namespace of its own.
func TestSystemdUnits(t *testing.T) {
	testenv.NeedProgram(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	// verify checks that ExecStart's program exists and is executable;
	// this test's own binary stands in for /usr/bin/spoolsync.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var copies []string
	for _, name := range []string{"spoolsync-mount.service", "spoolsync-server.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/bin/spoolsync", self)), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, p)
	}
	// --man=no: the man pages are the package's (scripts/package checks them).
	out, err := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, copies...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	m := units(t, filepath.Join("systemd", "spoolsync-mount.service"))
	for key, want := range map[string]string{
		"Service.Type": "notify", "Service.NotifyAccess": "main", "Service.WatchdogSec": "30s",
		"Service.ExecStart": "/usr/bin/spoolsync mount -c /etc/spoolsync.conf",
	} {
		if got := m[key]; len(got) != 1 || got[0] != want {
			t.Errorf("mount unit %s = %q, want %q", key, got, want)
		}
	}
	before := strings.Fields(strings.Join(m["Unit.Before"], " "))
	for _, svc := range []string{"dovecot.service", "cyrus-imapd.service", "postfix.service"} {
		if !slices.Contains(before, svc) {
			t.Errorf("mount unit: Before= lacks %s (%q)", svc, before)
		}
	}
	if len(m["Unit.RequiresMountsFor"]) == 0 {
		t.Error("mount unit: no RequiresMountsFor=")
	}
	for _, ns := range []string{"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
		"ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ProtectKernelTunables", "ProtectKernelModules",
		"ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "TemporaryFileSystem", "BindPaths", "RootDirectory"} {
		if v, ok := m["Service."+ns]; ok {
			t.Errorf("mount unit: %s=%s gives it a mount namespace: the spool would be mounted where the mail services do not see it", ns, v)
		}
	}
	if got := m["Service.DeviceAllow"]; !slices.Contains(got, "/dev/fuse rw") {
		t.Errorf("mount unit: DeviceAllow=%q lacks /dev/fuse rw", got)
	}
	s := units(t, filepath.Join("systemd", "spoolsync-server.service"))
	if got := s["Service.Type"]; len(got) != 1 || got[0] != "notify" {
		t.Errorf("server unit: Type=%q, want notify", got)
	}
}

// TestAlertRules: promtool checks the rules and runs their unit tests.
func TestAlertRules(t *testing.T) {
	testenv.NeedProgram(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "spoolsync.rules.yml"}, {"test", "rules", "spoolsync.rules.test.yml"}} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exported lists the metric names the code exports: the master's
// replication collector and the server's metrics, from their
// descriptions (what a scrape can show, whether or not it has a value
// yet).
func exported(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	lg, err := synclog.Open(synclog.Options{Dir: filepath.Join(dir, "log"), SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	r, err := replicator.New(lg, replicator.Options{Backing: dir, StateDir: dir}, []replicator.ChannelConfig{{Name: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	reg := prometheus.NewRegistry()
	reg.MustRegister(replicator.NewCollector(r))
	if err := server.NewMetrics(nil).Register(reg, nil); err != nil {
		t.Fatal(err)
	}
	descs := make(chan *prometheus.Desc, 100)
	go func() {
		reg.Describe(descs)
		close(descs)
	}()
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([a-z_:]+)"`)
	for d := range descs {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name in %s", d)
		}
		names[m[1]] = true
	}
	// A histogram's series are its name with these suffixes.
	for n := range names {
		if strings.HasSuffix(n, "_seconds") {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[n+s] = true
			}
		}
	}
	return names
}

var metricName = regexp.MustCompile(`\bspoolsync_[a-z_]+`)

// unknown is every spoolsync metric expr names that names does not hold,
// or a note that it names none.
func unknown(expr string, names map[string]bool) []string {
	found := metricName.FindAllString(expr, -1)
	if len(found) == 0 {
		return []string{"(no spoolsync metric)"}
	}
	var bad []string
	for _, n := range found {
		if !names[n] {
			bad = append(bad, n)
		}
	}
	return bad
}

// TestQueriesNameExportedMetrics: every query of the dashboard and every
// alert names only metrics the code exports: a renamed metric cannot
// leave a panel empty or an alert silent.
func TestQueriesNameExportedMetrics(t *testing.T) {
	names := exported(t)
	if bad := unknown("rate(spoolsync_channel_made_up_total[5m])", names); len(bad) != 1 {
		t.Fatalf("a made-up metric passes the check: %v", bad)
	}

	b, err := os.ReadFile(filepath.Join("grafana", "spoolsync.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/spoolsync.json: %v", err)
	}
	var queries []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && (k == "expr" || k == "definition") {
					queries = append(queries, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(dash)
	if len(queries) < 10 {
		t.Fatalf("found only %d queries in the dashboard", len(queries))
	}
	used := map[string]bool{}
	for _, q := range queries {
		if bad := unknown(q, names); len(bad) > 0 {
			t.Errorf("dashboard query %q: %v not exported", q, bad)
		}
		for _, n := range metricName.FindAllString(q, -1) {
			used[n] = true
		}
	}

	rules, err := os.ReadFile(filepath.Join("prometheus", "spoolsync.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(rules), "\n") {
		if expr, ok := strings.CutPrefix(strings.TrimSpace(l), "expr:"); ok {
			if bad := unknown(expr, names); len(bad) > 0 {
				t.Errorf("alert rule %q: %v not exported", expr, bad)
			}
		}
	}
	// And the dashboard shows every metric (a histogram by its buckets).
	for n := range names {
		if !used[n] && !used[n+"_bucket"] && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") && !strings.HasSuffix(n, "_bucket") {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
}

// TestConffile: the packaged /etc/spoolsync.conf is all comments (the
// defaults), names every key, and each of its commented settings is a key
// the parser knows when uncommented.
func TestConffile(t *testing.T) {
	b, err := os.ReadFile("spoolsync.conf")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(strings.NewReader(string(b)), "spoolsync.conf")
	if err != nil {
		t.Fatalf("the packaged configuration does not parse: %v", err)
	}
	empty, err := config.Parse(strings.NewReader(""), "spoolsync.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, empty) {
		t.Errorf("the packaged configuration is not all defaults: %+v", c)
	}
	setting := regexp.MustCompile(`^#([a-z_0-9]+):`)
	named := map[string]bool{}
	for i, l := range strings.Split(string(b), "\n") {
		m := setting.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		named[m[1]] = true
		_, err := config.Parse(strings.NewReader(l[1:]+"\n"), "spoolsync.conf")
		if err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("spoolsync.conf:%d: %v", i+1, err)
		}
	}
	for _, k := range config.Keys() {
		if !named[k] {
			t.Errorf("spoolsync.conf does not document %s", k)
		}
	}
}

// TestPackage builds the Debian package with scripts/package and checks
// its contents (dpkg-deb -c), its conffile, that the packaged binary
// states its version and commit, and that lintian finds no error.
func TestPackage(t *testing.T) {
	testenv.NeedProgram(t, "dpkg-deb", "dpkg")
	testenv.NeedProgram(t, "lintian", "lintian")
	dist := t.TempDir()
	cmd := exec.Command(filepath.Join("..", "scripts", "package"), "9.8.7")
	cmd.Env = append(os.Environ(), "DIST="+dist)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("scripts/package: %v\n%s", err, stderr)
	}
	deb := strings.TrimSpace(string(out))
	if want := filepath.Join(dist, "spoolsync_9.8.7_"+runtime.GOARCH+".deb"); deb != want {
		t.Fatalf("scripts/package made %q, want %q", deb, want)
	}

	listing, err := exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{} // path -> mode column
	for _, l := range strings.Split(strings.TrimSpace(string(listing)), "\n") {
		f := strings.Fields(l)
		p := strings.TrimPrefix(f[5], ".")
		files[strings.TrimSuffix(p, "/")] = f[0]
	}
	want := map[string]string{
		"/usr/bin/spoolsync":                            "-rwxr-xr-x",
		"/usr/sbin/mount.fuse.spoolsync":                "lrwxrwxrwx",
		"/lib/systemd/system/spoolsync-mount.service":   "-rw-r--r--",
		"/lib/systemd/system/spoolsync-server.service":  "-rw-r--r--",
		"/etc/spoolsync.conf":                           "-rw-r--r--",
		"/var/lib/spoolsync":                            "drwx------",
		"/usr/share/doc/spoolsync/copyright":            "-rw-r--r--",
		"/usr/share/doc/spoolsync/changelog.gz":         "-rw-r--r--",
		"/usr/share/man/man8/spoolsync.8.gz":            "-rw-r--r--",
		"/usr/share/man/man8/mount.fuse.spoolsync.8.gz": "-rw-r--r--",
	}
	for _, c := range []string{"mount", "server", "status", "resync", "log", "promote", "quarantine", "passwd"} {
		want["/usr/share/man/man8/spoolsync-"+c+".8.gz"] = "-rw-r--r--"
	}
	for p, mode := range want {
		got, ok := files[p]
		// dpkg-deb shows a symlink's mode as l---------.
		if !ok || got != mode && !(mode[0] == 'l' && got[0] == 'l') {
			t.Errorf("package: %s: mode %q (present %v), want %s", p, got, ok, mode)
		}
	}
	if conf, err := exec.Command("dpkg-deb", "-I", deb, "conffiles").Output(); err != nil || strings.TrimSpace(string(conf)) != "/etc/spoolsync.conf" {
		t.Errorf("conffiles: %q, %v; want /etc/spoolsync.conf", conf, err)
	}

	root := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	v, err := exec.Command(filepath.Join(root, "usr/bin/spoolsync"), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	commit, _ := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if !strings.HasPrefix(string(v), "spoolsync 9.8.7 (commit "+strings.TrimSpace(string(commit))) {
		t.Errorf("packaged spoolsync --version: %q, want version 9.8.7 and commit %s", v, commit)
	}

	lint := exec.Command("lintian", "--tag-display-limit", "0", deb)
	lo, err := lint.CombinedOutput()
	for _, l := range strings.Split(string(lo), "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian: %s", l)
		}
	}
	if err != nil && !t.Failed() {
		t.Errorf("lintian: %v\n%s", err, lo)
	}
}
