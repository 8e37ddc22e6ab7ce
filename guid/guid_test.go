package guid

import (
	"bytes"
	"strings"
	"testing"
)

func TestKnownAnswers(t *testing.T) {
	tests := []struct {
		mode  Mode
		input string
		want  string
	}{
		{SHA256, "", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{SHA256, "abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{BLAKE3, "", "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{BLAKE3, "abc", "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"},
		{SHA1, "", "sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709"},
		{SHA1, "abc", "sha1:a9993e364706816aba3e25717850c26c9cd0d89d"},
	}
	for _, tt := range tests {
		g, n, err := Sum(tt.mode, strings.NewReader(tt.input))
		if err != nil {
			t.Fatalf("Sum(%s, %q): %v", tt.mode, tt.input, err)
		}
		if got := g.String(); got != tt.want || n != int64(len(tt.input)) {
			t.Errorf("Sum(%s, %q) = %s, %d; want %s, %d", tt.mode, tt.input, got, n, tt.want, len(tt.input))
		}
		back, err := Parse(tt.want)
		if err != nil || back != g {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.want, back, err, g)
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"sha256", "blake3", "sha1", "none"} {
		m, err := ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	_, err := ParseMode("md5")
	if err == nil || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), "md5") {
		t.Errorf("ParseMode(md5) error = %v; want one naming md5 and the valid values", err)
	}
	if m, _ := ParseMode("sha256"); m != Default {
		t.Errorf("sha256 = %d, want Default %d", m, Default)
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "sha256", "sha256:", "sha256:zz", "sha1:" + strings.Repeat("a", 64), "none:00", "md5:00"} {
		if g, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %v, nil; want error", s, g)
		}
	}
	if g, err := Parse("none"); err != nil || !g.IsZero() {
		t.Errorf("Parse(none) = %v, %v; want zero", g, err)
	}
}

func TestModesNeverMatch(t *testing.T) {
	// sha256 and blake3 sums are both 32 bytes; the mode keeps them apart.
	a, _, _ := Sum(SHA256, strings.NewReader("x"))
	b := GUID{Mode: BLAKE3, Sum: a.Sum}
	if a == b {
		t.Fatal("GUIDs of different modes compare equal")
	}
	if _, _, err := Sum(None, strings.NewReader("x")); err == nil {
		t.Fatal("Sum(None) succeeded")
	}
}

func TestFromBytes(t *testing.T) {
	g, _, _ := Sum(SHA1, bytes.NewReader([]byte("abc")))
	back, err := FromBytes(SHA1, g.Bytes())
	if err != nil || back != g {
		t.Fatalf("FromBytes = %v, %v; want %v", back, err, g)
	}
	if _, err := FromBytes(SHA256, g.Bytes()); err == nil {
		t.Fatal("FromBytes accepted a 20-byte sha256")
	}
}
