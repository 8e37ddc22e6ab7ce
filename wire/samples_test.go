package wire

// sampleGUID is a sha256 GUID whose digest is 0x01 0x02 ... 0x20.
func sampleGUID() GUID {
	g := GUID{Mode: GUIDSHA256}
	for i := range g.Sum {
		g.Sum[i] = byte(i + 1)
	}
	return g
}

// sampleDigest is a digest whose bytes are all b.
func sampleDigest(b byte) Digest {
	var d Digest
	for i := range d {
		d[i] = b
	}
	return d
}

func sampleSHA1() GUID {
	g := GUID{Mode: GUIDSHA1}
	for i := 0; i < 20; i++ {
		g.Sum[i] = 0xA0 + byte(i)
	}
	return g
}

// samples holds one message of every type, with fields chosen to exercise
// each encoding (multi-byte varints, negative times, empty and non-empty
// strings). The golden test pins their bytes; the fuzz targets start from
// them.
var samples = []struct {
	name string
	m    Message
}{
	{"Greeting", &Greeting{Caps: CapStartTLS | CapZstd, Mechs: []string{"PLAIN", "EXTERNAL"}, Epoch: 3, MaxFrameSize: DefaultMaxFrameSize}},
	{"StartTLS", &StartTLS{}},
	{"Proceed", &Proceed{}},
	{"AuthPlain", &Auth{Mech: "PLAIN", HasInitial: true, Initial: []byte("\x00master\x00pw")}},
	{"AuthNoInitial", &Auth{Mech: "EXTERNAL"}},
	{"AuthChallenge", &AuthChallenge{Data: []byte{}}},
	{"AuthResponse", &AuthResponse{Data: []byte("resp")}},
	{"AuthOK", &AuthOK{Identity: "master@example.org"}},
	{"Hello", &Hello{Caps: CapZstd, Epoch: 300, MaxFrameSize: MinFrameSize}},
	{"Welcome", &Welcome{Caps: CapZstd}},
	{"WelcomeLimits", &Welcome{Caps: CapZstd | CapBatchLimits, MaxBatchOps: 50000, MaxBatchBytes: 4 << 30}},
	{"BatchBegin", &BatchBegin{Seq: 1 << 40, Channel: "dr"}},
	{"BatchEnd", &BatchEnd{Seq: 1 << 40, OpCount: 129}},
	{"Ack", &Ack{Seq: 127}},
	{"PositionRequest", &PositionRequest{Channel: "dr"}},
	{"PositionRequestDefault", &PositionRequest{}},
	{"Position", &Position{Channel: "dr", Applied: 300, Interrupted: 301, Epoch: 2}},
	{"PositionNone", &Position{}},
	{"Owed", &Owed{Seq: 300, Paths: []string{"user/bob/cur/1:2,S", "user/bob/tmp"}}},
	{"PutInline", &Put{Path: "user/bob/cur/1.eml", Content: ContentInline, Mode: 0o600, UID: 8, GID: 12, Mtime: 1700000000123456789, Size: 4096}},
	{"PutByGUID", &Put{Path: "a", Content: ContentByGUID, Mode: 0o644, Mtime: -1, Size: 5, GUID: sampleGUID()}},
	{"WriteRanges", &WriteRanges{Path: "user/bob/mbox", Size: 1 << 20, Ranges: []Range{{0, 10}, {4096, 200}}, GUID: sampleSHA1()}},
	{"Truncate", &Truncate{Path: "user/bob/mbox", Size: 0}},
	{"Mkdir", &Mkdir{Path: "user/bob/new", Mode: 0o2755, UID: 1000, GID: 1000, Mtime: 1}},
	{"Rmdir", &Rmdir{Path: "user/old"}},
	{"Unlink", &Unlink{Path: "user/bob/tmp/x"}},
	{"Rename", &Rename{Src: "user/bob/tmp/x", Dst: "user/bob/new/x", Flags: RenameNoReplace}},
	{"Link", &Link{Existing: "a/1", New: "b/1"}},
	{"Symlink", &Symlink{Path: "user/alias", Target: "../../etc/shadow", UID: 1, GID: 2, Mtime: 3}},
	{"Mknod", &Mknod{Path: "run/fifo", Kind: KindFIFO, Mode: 0o600}},
	{"MknodSocket", &Mknod{Path: "run/lmtp", Kind: KindSocket, Mode: 0o666}},
	{"SetAttr", &SetAttr{Path: "a", Mask: AttrMode | AttrTimes, Mode: 0o640, Mtime: 10, Atime: -10}},
	{"SetXattr", &SetXattr{Path: "a", Name: "user.seen", Value: []byte{0, 1, 2}}},
	{"RemoveXattr", &RemoveXattr{Path: "a", Name: "user.seen"}},
	{"SetXattrs", &SetXattrs{Path: "a", Attrs: []Xattr{{"user.a", []byte{1}}, {"user.seen", []byte("S")}}}},
	{"SetXattrsNone", &SetXattrs{Path: "a"}},
	{"Quarantine", &Quarantine{Path: "user/bob/new/1.host", Epoch: 3}},
	{"Data", &Data{Bytes: []byte("hello")}},
	{"Offer", &Offer{ID: 9, GUIDs: []GUID{sampleGUID(), sampleSHA1()}}},
	{"Lacks", &Lacks{ID: 9, Lacking: []bool{false, true, false, false, false, false, false, false, true}}},
	{"ManifestRequest", &ManifestRequest{Paths: []string{"user/alice", "user/bob"}, GUIDMode: GUIDBlake3}},
	{"ManifestRequestAll", &ManifestRequest{Paths: []string{}}},
	{"ManifestEntryFile", &ManifestEntry{Path: "user/bob/cur/1.eml", Kind: KindFile, Mode: 0o600, UID: 8, GID: 12, Mtime: 5, Size: 4096, Nlink: 2, Inode: 777, GUID: sampleGUID(),
		Xattrs: []Xattr{{"user.a", []byte("1")}, {"user.b", []byte{}}}}},
	{"ManifestEntrySymlink", &ManifestEntry{Path: "l", Kind: KindSymlink, Mode: 0o777, Nlink: 1, Inode: 2, Target: "x"}},
	{"ManifestEnd", &ManifestEnd{Count: 2}},
	{"DigestRequest", &DigestRequest{GUIDMode: GUIDSHA256, Dirs: []DigestDirReq{{Path: "", Digest: sampleDigest(1)}, {Path: "user/bob", Digest: sampleDigest(2)}}}},
	{"DigestReplySame", &DigestReply{Tag: DigestSame, Digest: sampleDigest(1)}},
	{"DigestReplyDiffer", &DigestReply{Path: "user/bob", Tag: DigestDiffer, Digest: sampleDigest(3), Count: 2}},
	{"DigestReplyAbsent", &DigestReply{Path: "user/gone", Tag: DigestAbsent}},
	{"DigestEntryDir", &DigestEntry{Name: "cur", Kind: KindDir, Attr: sampleDigest(4), Sub: sampleDigest(5)}},
	{"DigestEntryFile", &DigestEntry{Name: "1.eml", Kind: KindFile, Attr: sampleDigest(6)}},
	{"Ping", &Ping{ID: 1}},
	{"Pong", &Pong{ID: 1}},
	{"Goodbye", &Goodbye{Reason: "shutting down"}},
	{"Error", &Error{Code: CodeFenced, Seq: 0, Path: "", Message: "client epoch 1 is below 2"}},
	{"ErrorPath", &Error{Code: CodeBadPath, Seq: 12, Path: "../x", Message: "bad"}},
}
