package config

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// parser converts entries into typed values; the first error sticks.
type parser struct {
	file    string
	entries map[string]entry
	err     error
}

func (p *parser) line(k string) int { return p.entries[k].line }

func (p *parser) errf(k, format string, args ...any) error {
	err := &Error{File: p.file, Line: p.line(k), Key: k, Msg: fmt.Sprintf(format, args...)}
	if p.err == nil {
		p.err = err
	}
	return err
}

func (p *parser) get(k string) (string, bool) {
	if p.err != nil {
		return "", false
	}
	e, ok := p.entries[k]
	return e.value, ok
}

func (p *parser) str(k string, dst *string) {
	if v, ok := p.get(k); ok {
		*dst = v
	}
}

// boolean accepts what imapd.conf accepts: yes/no, on/off, true/false, 1/0.
func (p *parser) boolean(k string, dst *bool) {
	v, ok := p.get(k)
	if !ok {
		return
	}
	switch strings.ToLower(v) {
	case "yes", "on", "true", "1", "t", "y":
		*dst = true
	case "no", "off", "false", "0", "f", "n":
		*dst = false
	default:
		p.errf(k, "%q is not a yes/no value", v)
	}
}

// duration accepts Go durations ("100ms", "2s") and, as Cyrus does, a bare
// number of seconds.
func (p *parser) duration(k string, dst *time.Duration) {
	v, ok := p.get(k)
	if !ok {
		return
	}
	d, err := parseDuration(v)
	if err != nil || d <= 0 {
		p.errf(k, "%q is not a positive duration (examples: 100ms, 1s, 5)", v)
		return
	}
	*dst = d
}

func parseDuration(v string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(n * float64(time.Second)), nil
	}
	return time.ParseDuration(v)
}

func (p *parser) oneOf(k string, dst *string, allowed ...string) {
	v, ok := p.get(k)
	if !ok {
		return
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			*dst = a
			return
		}
	}
	p.errf(k, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

// list splits a value on blanks and commas, as Cyrus's admins key is read.
func (p *parser) list(k string) []string {
	v, ok := p.get(k)
	if !ok {
		return nil
	}
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// batchSize reads "EVENTS" or "EVENTS SIZE" (SIZE with an optional K/M/G
// suffix): the most events and bytes of content in one batch.
func (p *parser) batchSize(k string, events *int, bytes *int64) {
	v, ok := p.get(k)
	if !ok {
		return
	}
	f := strings.Fields(strings.ReplaceAll(v, ",", " "))
	if len(f) == 0 || len(f) > 2 {
		p.errf(k, "%q: expected a number of events, optionally followed by a size (example: 4096 32M)", v)
		return
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 || n > 1<<20 {
		p.errf(k, "%q: the number of events must be between 1 and 1048576", f[0])
		return
	}
	*events = n
	if len(f) == 2 {
		b, err := ParseSize(f[1])
		if err != nil || b < 64<<10 {
			p.errf(k, "%q: the size must be at least 64K (examples: 512K, 32M)", f[1])
			return
		}
		*bytes = b
	}
}

// ParseSize reads a byte count with an optional K, M or G suffix (powers of 1024).
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(strings.ToUpper(s), "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(strings.ToUpper(s), "M"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(strings.ToUpper(s), "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// compress reads sync_compress: "off", "zstd", or "zstd N" / "N" with N the
// zstd speed level 1 (fastest) to 4 (best compression).
func (p *parser) compress(k string, dst *int) {
	v, ok := p.get(k)
	if !ok {
		return
	}
	f := strings.Fields(strings.ToLower(v))
	switch {
	case len(f) == 1 && (f[0] == "off" || f[0] == "no" || f[0] == "none"):
		*dst = 0
		return
	case len(f) == 1 && f[0] == "zstd":
		*dst = 2
		return
	case len(f) == 2 && f[0] == "zstd":
		f = f[1:]
	}
	if len(f) == 1 {
		if n, err := strconv.Atoi(f[0]); err == nil && n >= 1 && n <= 4 {
			*dst = n
			return
		}
	}
	p.errf(k, "%q: expected off, zstd, or a zstd level 1 (fastest) to 4 (smallest)", v)
}

// channel collects the keys of one channel; name "" is the unnamed one.
// A channel key without a prefix is the default for every channel.
func (p *parser) channel(name string) (Channel, error) {
	key := func(k string) string {
		if name != "" {
			if _, ok := p.entries[name+"_"+k]; ok {
				return name + "_" + k
			}
		}
		return k
	}
	ch := Channel{Name: name, Port: DefaultPort}
	if name != "" {
		// A channel's host must be its own: two channels shipping to one
		// default host would be one replica counted twice.
		if _, ok := p.entries[name+"_sync_host"]; ok {
			p.str(name+"_sync_host", &ch.Host)
		}
	} else {
		p.str("sync_host", &ch.Host)
	}
	if v, ok := p.get(key("sync_port")); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return ch, p.errf(key("sync_port"), "%q is not a port number", v)
		}
		ch.Port = n
	}
	p.str(key("sync_authname"), &ch.AuthName)
	p.str(key("sync_realm"), &ch.Realm)
	p.str(key("tls_ca_file"), &ch.CAFile)
	if err := p.password(name, &ch); err != nil {
		return ch, err
	}
	if p.err != nil {
		return ch, p.err
	}
	if ch.Host != "" && ch.AuthName == "" {
		k := "sync_authname"
		if name != "" {
			k = name + "_sync_authname"
		}
		return ch, &Error{File: p.file, Line: p.line(key("sync_host")), Key: k,
			Msg: fmt.Sprintf("missing: the replica %s needs the SASL identity the master logs in as", ch.Host)}
	}
	if ch.Host != "" && ch.Password == "" {
		k := "sync_password"
		if name != "" {
			k = name + "_sync_password"
		}
		return ch, &Error{File: p.file, Line: p.line(key("sync_host")), Key: k,
			Msg: fmt.Sprintf("missing: set sync_password or sync_password_file for the replica %s", ch.Host)}
	}
	return ch, nil
}

// password sets ch.Password from sync_password or sync_password_file. The
// most specific level wins: a channel's own key of either kind over the
// global ones; both kinds at one level is a contradiction.
func (p *parser) password(name string, ch *Channel) error {
	prefixes := []string{""}
	if name != "" {
		prefixes = []string{name + "_", ""}
	}
	for _, prefix := range prefixes {
		pwKey, pfKey := prefix+"sync_password", prefix+"sync_password_file"
		pw, hasPw := p.get(pwKey)
		pf, hasPf := p.get(pfKey)
		switch {
		case hasPw && hasPf:
			return p.errf(pfKey, "set %s or %s, not both", pwKey, pfKey)
		case hasPw:
			ch.Password = pw
			return nil
		case hasPf:
			b, err := os.ReadFile(pf)
			if err != nil {
				return p.errf(pfKey, "cannot read the password: %v", err)
			}
			ch.Password = strings.TrimRight(string(b), "\r\n")
			return nil
		}
	}
	return p.err
}

// size reads a byte count (K/M/G suffix) of at least least bytes.
func (p *parser) size(k string, dst *int64, least int64) {
	v, ok := p.get(k)
	if !ok {
		return
	}
	n, err := ParseSize(v)
	if err != nil || n < least {
		p.errf(k, "%q: expected a size of at least %dK, with an optional K, M or G suffix (example: 4G)", v, least>>10)
		return
	}
	*dst = n
}

// batchLimit reads "OPS SIZE": the most ops and content bytes the replica
// takes in one batch.
func (p *parser) batchLimit(k string, ops *int, bytes *int64) {
	v, ok := p.get(k)
	if !ok {
		return
	}
	f := strings.Fields(v)
	n, err := 0, error(nil)
	if len(f) == 2 {
		n, err = strconv.Atoi(f[0])
	}
	b, berr := int64(0), error(nil)
	if len(f) == 2 {
		b, berr = ParseSize(f[1])
	}
	if len(f) != 2 || err != nil || n < 1024 || berr != nil || b < 1<<20 {
		p.errf(k, "%q: expected a number of ops (at least 1024) and a size (at least 1M), like 50000 2G", v)
		return
	}
	*ops, *bytes = n, b
}
