package payload

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A range that stalls on one connection holds the prefix, and the decoder
// following it, back: it is asked for again on the other connection, and the
// download ends without waiting for the stalled one.
func TestStalledRangeIsAskedForAgainOnAnotherConnection(t *testing.T) {
	srv, user := newSSHServer(t, 1)
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 12<<20, 11)
	// dd stalls for a minute the first time it is asked for the first range.
	fake := filepath.Join(dir, "bin")
	os.Mkdir(fake, 0o755)
	flag := filepath.Join(dir, "stalled-once")
	script := "#!/bin/bash\nfor a in \"$@\"; do [ \"$a\" = skip=0 ] && [ ! -e " + flag + " ] && { touch " + flag + "; sleep 60; }; done\nexec /bin/dd \"$@\"\n"
	if err := os.WriteFile(filepath.Join(fake, "dd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+":"+os.Getenv("PATH"))
	a := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer a.close()
	b := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer b.close()
	tracker := newPrefixTracker(int64(len(want)))
	d := &downloader{conns: []*sshConn{a, b}, connChannels: 1, chunkSize: 1 << 20, retryDelay: time.Millisecond, tracker: tracker}
	start := time.Now()
	downloadAndCompare(t, d, src, want)
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("the download took %s: it waited for the stalled range", el)
	}
	if _, err := os.Stat(flag); err != nil {
		t.Fatal("the stalling dd never ran")
	}
	if d.hedged.Load() < 1 {
		t.Fatal("no range was asked for a second time")
	}
	if tracker.completed() != int64(len(want)) {
		t.Fatalf("the prefix is %d bytes of %d", tracker.completed(), len(want))
	}
}

// Without a stall, no range is asked for twice.
func TestNoRangeIsAskedForTwiceWithoutAStall(t *testing.T) {
	srv, user := newSSHServer(t, 1)
	dir := t.TempDir()
	src := filepath.Join(dir, "remote.img")
	want := randomFile(t, src, 8<<20, 12)
	a := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer a.close()
	b := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
	defer b.close()
	d := &downloader{conns: []*sshConn{a, b}, connChannels: 2, chunkSize: 1 << 20, retryDelay: time.Millisecond, tracker: newPrefixTracker(int64(len(want)))}
	downloadAndCompare(t, d, src, want)
	if n := d.hedged.Load(); n != 0 {
		t.Fatalf("%d ranges were asked for twice", n)
	}
}

// While the local work lags behind the download by more than maxBacklog,
// channels take no new ranges while one is in flight, on one connection as
// on two, and the download still completes.
func TestChannelsWaitForTheDecoder(t *testing.T) {
	old := maxBacklog
	maxBacklog = 2 << 20
	t.Cleanup(func() { maxBacklog = old })
	srv, user := newSSHServer(t, 1)
	for _, conns := range []int{1, 2} {
		src := filepath.Join(t.TempDir(), "remote.img")
		want := randomFile(t, src, 16<<20, int64(12+conns))
		d := &downloader{connChannels: 2, chunkSize: 512 << 10, retryDelay: time.Millisecond, tracker: newPrefixTracker(int64(len(want)))}
		for range conns {
			c := &sshConn{target: srv.target(user), pin: &hostKeyPin{}}
			defer c.close()
			d.conns = append(d.conns, c)
		}
		dst, err := os.Create(src + ".local")
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		// A reader that read the first bytes and then stalls, as a
		// decoder on a busy CPU would.
		r := &prefixReader{ctx: t.Context(), t: d.tracker, f: dst}
		go r.Read(make([]byte, 1))
		if err := d.download(t.Context(), src, int64(len(want)), dst); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dst.Name()); string(got) != string(want) {
			t.Fatalf("%d connections: the download differs from the source", conns)
		}
		if d.gated.Load() == 0 {
			t.Fatalf("%d connections: no channel waited for the stalled reader", conns)
		}
	}
}

// The prefix grows in bursts of every channel's ranges: a backlog within
// maxBacklog plus what the channels of our own asked for does not pause the
// extra connections; beyond it, it does.
func TestExtraConnectionsAllowForThePrefixsBursts(t *testing.T) {
	old := maxBacklog
	maxBacklog = 2 << 20
	t.Cleanup(func() { maxBacklog = old })
	tracker := newPrefixTracker(64 << 20)
	tracker.reading.Store(true)
	tracker.complete(0, 10<<20)
	// 4 channels x streamDepth ranges x 1 MiB + maxBacklog = 10 MiB.
	q := &rangeQueue{tracker: tracker, carve: &rangeCarver{size: 64 << 20, longest: 1 << 20}, ownActive: 4}
	if q.gatedLocked() {
		t.Fatal("a 10 MiB backlog paused the extra connections")
	}
	tracker.complete(10<<20, 1<<20)
	if !q.gatedLocked() {
		t.Fatal("an 11 MiB backlog did not pause the extra connections")
	}
}
