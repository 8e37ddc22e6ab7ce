package synclog

import "slices"

// AddRange inserts r into rs, a sorted list of non-overlapping,
// non-adjacent ranges, merging it with what it overlaps or touches. When
// the list would exceed limit ranges (limit > 0), the neighbours with the
// smallest gap are merged across it: a range may then cover bytes that did
// not change, which costs a replicator a few extra bytes, never
// correctness (it ships the current content of every byte in a range).
func AddRange(rs []Range, r Range, limit int) []Range {
	if r.Len == 0 {
		return rs
	}
	off, end := r.Off, r.Off+r.Len
	// First range that ends at or after off: it may merge with the new one.
	i, _ := slices.BinarySearchFunc(rs, off, func(r Range, off uint64) int {
		switch e := r.Off + r.Len; {
		case e < off:
			return -1
		case e > off:
			return 1
		}
		return 0
	})
	j := i
	for j < len(rs) && rs[j].Off <= end {
		off = min(off, rs[j].Off)
		end = max(end, rs[j].Off+rs[j].Len)
		j++
	}
	rs = slices.Replace(rs, i, j, Range{Off: off, Len: end - off})
	for limit > 0 && len(rs) > limit {
		rs = mergeSmallestGap(rs)
	}
	return rs
}

func mergeSmallestGap(rs []Range) []Range {
	best := 0
	gap := func(i int) uint64 { return rs[i+1].Off - (rs[i].Off + rs[i].Len) }
	for i := 1; i+1 < len(rs); i++ {
		if gap(i) < gap(best) {
			best = i
		}
	}
	rs[best].Len = rs[best+1].Off + rs[best+1].Len - rs[best].Off
	return slices.Delete(rs, best+1, best+2)
}
