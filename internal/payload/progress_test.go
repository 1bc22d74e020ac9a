package payload

import (
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestProgressReader(t *testing.T) {
	p := newProgressReader()
	var total atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(io.Discard, p)
		total.Store(n)
	}()
	for i := 0; i < 1000; i++ {
		p.Add(100003)
	}
	time.Sleep(10 * time.Millisecond)
	p.Close()
	wg.Wait()
	if total.Load() != 100003*1000 {
		t.Fatalf("the reader returned %d bytes, want %d", total.Load(), 100003*1000)
	}
}

func TestProgressReaderBatchesReads(t *testing.T) {
	p := newProgressReader()
	p.interval = 50 * time.Millisecond
	var reads, total atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			n, err := p.Read(buf)
			total.Add(int64(n))
			if err != nil {
				return
			}
			reads.Add(1)
		}
	}()
	start := time.Now()
	var added int64
	for time.Since(start) < 500*time.Millisecond {
		p.Add(1000)
		added += 1000
		time.Sleep(100 * time.Microsecond)
	}
	p.Close()
	<-done
	// About 10 reads in 500 ms at one per 50 ms, not one per Add.
	if r := reads.Load(); r > 20 || r < 2 {
		t.Fatalf("%d reads in 500 ms with a 50 ms interval", r)
	}
	if total.Load() != added {
		t.Fatalf("reported %d bytes of %d", total.Load(), added)
	}
}
