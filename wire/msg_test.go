package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// golden pins the full frame (type, length, payload) of every sample.
// A change here is a protocol change: bump Version or add a capability.
var golden = map[string]string{
	"Greeting":               "0116050205504c41494e0845585445524e414c0380808002",
	"StartTLS":               "0200",
	"Proceed":                "0300",
	"AuthPlain":              "041205504c41494e010a006d6173746572007077",
	"AuthNoInitial":          "040a0845585445524e414c00",
	"AuthChallenge":          "050100",
	"AuthResponse":           "06050472657370",
	"AuthOK":                 "0713126d6173746572406578616d706c652e6f7267",
	"Hello":                  "080604ac02808004",
	"Welcome":                "090104",
	"WelcomeLimits":          "09090cd086038080808010",
	"BatchBegin":             "1009808080808020026472",
	"BatchEnd":               "11088080808080208101",
	"Ack":                    "12017f",
	"PositionRequest":        "1303026472",
	"PositionRequestDefault": "130100",
	"Position":               "1408026472ac02ad0202",
	"Owed":                   "1523ac020212757365722f626f622f6375722f313a322c530c757365722f626f622f746d70",
	"PositionNone":           "140400000000",
	"PutInline":              "202412757365722f626f622f6375722f312e656d6c018003080caab4aed8c7bfce972f802000",
	"PutByGUID":              "202a016102a40300000105010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
	"WriteRanges":            "212d0d757365722f626f622f6d626f7880804002000a8020c80103a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
	"Truncate":               "220f0d757365722f626f622f6d626f7800",
	"Mkdir":                  "23140c757365722f626f622f6e6577ed0be807e80702",
	"Rmdir":                  "240908757365722f6f6c64",
	"Unlink":                 "250f0e757365722f626f622f746d702f78",
	"Rename":                 "261f0e757365722f626f622f746d702f780e757365722f626f622f6e65772f7801",
	"Link":                   "270803612f3103622f31",
	"Symlink":                "281f0a757365722f616c696173102e2e2f2e2e2f6574632f736861646f77010206",
	"Mknod":                  "290f0872756e2f6669666f048003000000",
	"MknodSocket":            "290f0872756e2f6c6d747005b603000000",
	"SetAttr":                "2a09016105a00300001413",
	"SetXattr":               "2b10016109757365722e7365656e03000102",
	"RemoveXattr":            "2c0c016109757365722e7365656e",
	"SetXattrs":              "2e1801610206757365722e61010109757365722e7365656e0153",
	"SetXattrsNone":          "2e03016100",
	"Quarantine":             "2d1513757365722f626f622f6e65772f312e686f737403",
	"Data":                   "300568656c6c6f",
	"Offer":                  "31380902010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2003a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
	"Lacks":                  "320409090201",
	"ManifestRequest":        "4016020a757365722f616c69636508757365722f626f6202",
	"ManifestRequestAll":     "40020000",
	"ManifestEntryFile":      "415212757365722f626f622f6375722f312e656d6c018003080c0a8020028906010102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20000206757365722e61013106757365722e6200",
	"ManifestEntrySymlink":   "410f016c03ff0300000000010200017800",
	"ManifestEnd":            "420102",
	"Ping":                   "500101",
	"Pong":                   "510101",
	"Goodbye":                "520e0d7368757474696e6720646f776e",
	"DigestRequest":          "434c010200010101010101010101010101010101010101010101010101010101010101010108757365722f626f620202020202020202020202020202020202020202020202020202020202020202",
	"DigestReplySame":        "44230001010101010101010101010101010101010101010101010101010101010101010100",
	"DigestReplyDiffer":      "442b08757365722f626f6202030303030303030303030303030303030303030303030303030303030303030302",
	"DigestReplyAbsent":      "442c09757365722f676f6e6500000000000000000000000000000000000000000000000000000000000000000000",
	"DigestEntryDir":         "4545036375720204040404040404040404040404040404040404040404040404040404040404040505050505050505050505050505050505050505050505050505050505050505",
	"DigestEntryFile":        "452705312e656d6c010606060606060606060606060606060606060606060606060606060606060606",
	"Error":                  "7f1d04000019636c69656e742065706f636820312069732062656c6f772032",
	"ErrorPath":              "7f0b050c042e2e2f7803626164",
}

func TestGolden(t *testing.T) {
	if len(golden) != len(samples) {
		t.Errorf("%d golden entries for %d samples", len(golden), len(samples))
	}
	seen := map[MsgType]bool{}
	for _, s := range samples {
		seen[s.m.Type()] = true
		got, err := AppendFrame(nil, s.m)
		if err != nil {
			t.Errorf("%s: encode: %v", s.name, err)
			continue
		}
		if want := golden[s.name]; hex.EncodeToString(got) != want {
			t.Errorf("%s: encoding changed\n got %x\nwant %s", s.name, got, want)
		}
		// And back: the frame decodes to the same message.
		fr := frameReader{r: bufioFrom(got), max: DefaultMaxFrameSize}
		typ, payload, err := fr.next()
		if err != nil {
			t.Errorf("%s: read frame: %v", s.name, err)
			continue
		}
		m, err := Unmarshal(typ, payload)
		if err != nil {
			t.Errorf("%s: decode: %v", s.name, err)
			continue
		}
		if !reflect.DeepEqual(m, s.m) {
			t.Errorf("%s: round trip: got %+v, want %+v", s.name, m, s.m)
		}
	}
	for t0 := 0; t0 < 0x80; t0++ {
		if newMessage(MsgType(t0)) != nil && !seen[MsgType(t0)] {
			t.Errorf("no golden sample for %v", MsgType(t0))
		}
	}
}

func TestValidPath(t *testing.T) {
	good := []string{"a", "a/b", "user/bob/cur/1700000000.M1P2.host,S=123:2,S", "a..b", ".hidden", "..x", strings.Repeat("n", 255),
		strings.Repeat(strings.Repeat("d", 255)+"/", 15) + strings.Repeat("f", 255)}
	bad := []string{"", ".", "..", "/", "/etc/x", "../x", "a/../../x", "a/..", "./a", "a/./b", "a//b", "a/", "a\x00b",
		strings.Repeat("n", 256), "a/" + strings.Repeat("n", 256), strings.Repeat("d/", 2048) + "x"}
	for _, p := range good {
		if err := ValidPath(p); err != nil {
			t.Errorf("ValidPath(%.40q): %v, want nil", p, err)
		}
	}
	for _, p := range bad {
		if err := ValidPath(p); err == nil {
			t.Errorf("ValidPath(%.40q) = nil, want an error", p)
		}
	}
}

func TestComparePaths(t *testing.T) {
	// The order filepath.WalkDir visits a tree in.
	ordered := []string{"a", "a/b", "a/b/c", "a/c", "a.txt", "a0", "b", "b/a"}
	for i := range ordered {
		for j := range ordered {
			got := ComparePaths(ordered[i], ordered[j])
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got != want {
				t.Errorf("ComparePaths(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

// badPaths are rejected in every path field of every op.
var badPaths = []string{"../x", "/etc/x", "a/../../x", "a\x00b", strings.Repeat("n", 256), strings.Repeat("d/", 2049) + "x", "", "a//b", "."}

// pathFields returns, for each message with path fields, a setter per field.
func pathFields() map[string]func(p string) Message {
	return map[string]func(string) Message{
		"Put":             func(p string) Message { return &Put{Path: p, Content: ContentInline} },
		"WriteRanges":     func(p string) Message { return &WriteRanges{Path: p, Size: 1, Ranges: []Range{{0, 1}}} },
		"Truncate":        func(p string) Message { return &Truncate{Path: p} },
		"Mkdir":           func(p string) Message { return &Mkdir{Path: p} },
		"Rmdir":           func(p string) Message { return &Rmdir{Path: p} },
		"Unlink":          func(p string) Message { return &Unlink{Path: p} },
		"Rename.src":      func(p string) Message { return &Rename{Src: p, Dst: "ok"} },
		"Rename.dst":      func(p string) Message { return &Rename{Src: "ok", Dst: p} },
		"Link.existing":   func(p string) Message { return &Link{Existing: p, New: "ok"} },
		"Link.new":        func(p string) Message { return &Link{Existing: "ok", New: p} },
		"Symlink":         func(p string) Message { return &Symlink{Path: p, Target: "t"} },
		"Mknod":           func(p string) Message { return &Mknod{Path: p, Kind: KindFIFO} },
		"SetAttr":         func(p string) Message { return &SetAttr{Path: p, Mask: AttrMode} },
		"SetXattr":        func(p string) Message { return &SetXattr{Path: p, Name: "user.x"} },
		"RemoveXattr":     func(p string) Message { return &RemoveXattr{Path: p, Name: "user.x"} },
		"SetXattrs":       func(p string) Message { return &SetXattrs{Path: p} },
		"Quarantine":      func(p string) Message { return &Quarantine{Path: p, Epoch: 1} },
		"ManifestRequest": func(p string) Message { return &ManifestRequest{Paths: []string{p}} },
		"ManifestEntry":   func(p string) Message { return &ManifestEntry{Path: p, Kind: KindFile} },
	}
}

func TestDecoderRejectsBadPaths(t *testing.T) {
	for name, mk := range pathFields() {
		if _, err := Unmarshal(mk("ok").Type(), mk("ok").appendPayload(nil)); err != nil {
			t.Errorf("%s with a good path: %v", name, err)
		}
		for _, p := range badPaths {
			m := mk(p)
			// Encode without validation, as a hostile peer would.
			_, err := Unmarshal(m.Type(), m.appendPayload(nil))
			if err == nil {
				t.Errorf("%s: path %.40q accepted", name, p)
				continue
			}
			if pe := asProto(err); pe == nil || (pe.Code != CodeBadPath && pe.Code != CodeTooLarge) {
				t.Errorf("%s: path %.40q: %v, want a badpath or toolarge error", name, p, err)
			}
			// And the sender refuses to send it in the first place.
			if _, err := Marshal(m); err == nil {
				t.Errorf("%s: Marshal accepted path %.40q", name, p)
			}
		}
	}
}

// TestDecoderRejects covers the non-path rules: enums, bounds, canonical
// encodings.
func TestDecoderRejects(t *testing.T) {
	long := strings.Repeat("x", 300)
	cases := map[string]Message{
		"put unknown content":   &Put{Path: "a", Content: 3},
		"put by guid w/o guid":  &Put{Path: "a", Content: ContentByGUID},
		"put mode with type":    &Put{Path: "a", Content: ContentInline, Mode: 0o100644},
		"put huge size":         &Put{Path: "a", Content: ContentInline, Size: 1 << 63},
		"guid bad mode":         &Put{Path: "a", Content: ContentByGUID, GUID: GUID{Mode: 9}},
		"ranges none":           &WriteRanges{Path: "a", Size: 1},
		"ranges empty range":    &WriteRanges{Path: "a", Size: 10, Ranges: []Range{{0, 0}}},
		"ranges overlap":        &WriteRanges{Path: "a", Size: 10, Ranges: []Range{{0, 5}, {4, 2}}},
		"ranges past size":      &WriteRanges{Path: "a", Size: 10, Ranges: []Range{{8, 5}}},
		"ranges overflow":       &WriteRanges{Path: "a", Size: 10, Ranges: []Range{{1, 1<<64 - 1}}},
		"rename both flags":     &Rename{Src: "a", Dst: "b", Flags: 3},
		"rename unknown flag":   &Rename{Src: "a", Dst: "b", Flags: 4},
		"symlink no target":     &Symlink{Path: "a"},
		"symlink NUL target":    &Symlink{Path: "a", Target: "x\x00"},
		"mknod not fifo":        &Mknod{Path: "a", Kind: KindFile},
		"mknod unknown kind":    &Mknod{Path: "a", Kind: KindSocket + 1},
		"setattr no mask":       &SetAttr{Path: "a"},
		"setattr unknown bit":   &SetAttr{Path: "a", Mask: 8},
		"xattr no namespace":    &SetXattr{Path: "a", Name: "seen"},
		"xattr long name":       &SetXattr{Path: "a", Name: "user." + long},
		"xattr big value":       &SetXattr{Path: "a", Name: "user.x", Value: make([]byte, MaxXattrValue+1)},
		"xattrs unsorted":       &SetXattrs{Path: "a", Attrs: []Xattr{{"user.b", nil}, {"user.a", nil}}},
		"xattrs twice":          &SetXattrs{Path: "a", Attrs: []Xattr{{"user.a", nil}, {"user.a", nil}}},
		"xattrs bad name":       &SetXattrs{Path: "a", Attrs: []Xattr{{"seen", nil}}},
		"xattrs too many":       &SetXattrs{Path: "a", Attrs: make([]Xattr, MaxXattrs+1)},
		"batch seq 0":           &BatchBegin{},
		"ack seq 0":             &Ack{},
		"empty data":            &Data{},
		"offer empty":           &Offer{},
		"offer zero guid":       &Offer{GUIDs: []GUID{{}}},
		"offer too many":        &Offer{GUIDs: make([]GUID, MaxOfferGUIDs+1)},
		"lacks empty":           &Lacks{},
		"manifest unsorted":     &ManifestRequest{Paths: []string{"b", "a"}},
		"manifest nested":       &ManifestRequest{Paths: []string{"a", "a/b"}},
		"manifest guid mode 9":  &ManifestRequest{GUIDMode: 9},
		"entry unknown kind":    &ManifestEntry{Path: "a", Kind: 9},
		"entry dir with guid":   &ManifestEntry{Path: "a", Kind: KindDir, GUID: sampleGUID()},
		"entry file w/ target":  &ManifestEntry{Path: "a", Kind: KindFile, Target: "x"},
		"entry xattrs unsorted": &ManifestEntry{Path: "a", Kind: KindFile, Xattrs: []Xattr{{"user.b", nil}, {"user.a", nil}}},
		"auth bad mech":         &Auth{Mech: "plain"},
		"digest no dirs":        &DigestRequest{GUIDMode: GUIDSHA256},
		"digest root twice":     &DigestRequest{Dirs: []DigestDirReq{{Path: ""}, {Path: ""}}},
		"digest unsorted":       &DigestRequest{Dirs: []DigestDirReq{{Path: "b"}, {Path: "a"}}},
		"digest bad path":       &DigestRequest{Dirs: []DigestDirReq{{Path: "a/../b"}}},
		"digest guid mode 9":    &DigestRequest{GUIDMode: 9, Dirs: []DigestDirReq{{Path: "a"}}},
		"reply unknown tag":     &DigestReply{Tag: 7},
		"reply absent w/ count": &DigestReply{Tag: DigestAbsent, Count: 1},
		"reply same w/ count":   &DigestReply{Tag: DigestSame, Count: 1},
		"reply absent digest":   &DigestReply{Tag: DigestNotDir, Digest: sampleDigest(1)},
		"reply bad path":        &DigestReply{Path: "/etc", Tag: DigestSame},
		"entry name w/ slash":   &DigestEntry{Name: "a/b", Kind: KindFile},
		"entry name dotdot":     &DigestEntry{Name: "..", Kind: KindFile},
		"entry name empty":      &DigestEntry{Kind: KindFile},
		"entry kind 0":          &DigestEntry{Name: "a"},
		"greeting small frame":  &Greeting{MaxFrameSize: 1024},
		"hello big frame":       &Hello{MaxFrameSize: MaxFrameSizeLimit + 1},
		"error code 0":          &Error{},
		"goodbye NUL":           &Goodbye{Reason: "a\x00"},
		"channel not UTF-8":     &BatchBegin{Seq: 1, Channel: "\xff"},
	}
	for name, m := range cases {
		if _, err := Unmarshal(m.Type(), m.appendPayload(nil)); err == nil {
			t.Errorf("%s: decoder accepted %+v", name, m)
		} else if asProto(err) == nil {
			t.Errorf("%s: %v is not a *ProtoError", name, err)
		}
	}

	raw := map[string][]byte{
		"non-minimal varint": {0x80, 0x00},                              // Ack seq
		"trailing byte":      {0x01, 0x00},                              // Ack seq 1, then junk
		"truncated":          {0x80},                                    // Ack seq
		"varint overflow":    bytes.Repeat([]byte{0xff}, 11),            // Ack seq
		"bool 2":             {0x01, 'A', 0x02},                         // Auth
		"lacks unused bits":  {0x01, 0x01, 0x02},                        // 1 entry, bit 1 set
		"count past payload": {0x05},                                    // ManifestRequest of 5 paths, no bytes
		"uid over 32 bits":   {0x01, 'a', 0x80, 0x80, 0x80, 0x80, 0x10}, // Rmdir, then junk: still an error
	}
	types := map[string]MsgType{"bool 2": TypeAuth, "lacks unused bits": TypeLacks, "count past payload": TypeManifestRequest, "uid over 32 bits": TypeRmdir}
	for name, p := range raw {
		typ, ok := types[name]
		if !ok {
			typ = TypeAck
		}
		if _, err := Unmarshal(typ, p); err == nil {
			t.Errorf("%s: decoder accepted % x", name, p)
		}
	}
	if _, err := Unmarshal(0x7e, nil); err == nil {
		t.Errorf("unknown required type accepted")
	}
}

func bufioFrom(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }
