package synclog

import (
	"fmt"
	"sync"
	"testing"
)

// BenchmarkAppendSync measures one event appended and made durable per
// op, by 1 or 8 goroutines at once. syncs/op shows group commit at work.
func BenchmarkAppendSync(b *testing.B) {
	for _, goroutines := range []int{1, 8} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			l := openTestLog(b, "", Options{SegmentSize: DefaultSegmentSize, FlushInterval: -1})
			ev := testEvent(1, 40)
			b.ReportAllocs()
			b.ResetTimer()
			before := l.syncs.Load()
			var wg sync.WaitGroup
			for g := range goroutines {
				n := b.N / goroutines
				if g < b.N%goroutines {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range n {
						e := *ev
						last, err := l.Append(&e)
						if err == nil {
							err = l.Sync(last)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(l.syncs.Load()-before)/float64(b.N), "syncs/op")
		})
	}
}
