package remotecmd

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// countingComm records how many calls are inside it at once.
type countingComm struct {
	inside, most atomic.Int32
}

func (c *countingComm) enter() {
	n := c.inside.Add(1)
	for {
		m := c.most.Load()
		if n <= m || c.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	c.inside.Add(-1)
}

func (c *countingComm) Start(context.Context, *packersdk.RemoteCmd) error { c.enter(); return nil }
func (c *countingComm) Upload(string, io.Reader, *os.FileInfo) error      { c.enter(); return nil }
func (c *countingComm) UploadDir(string, string, []string) error          { c.enter(); return nil }
func (c *countingComm) Download(string, io.Writer) error                  { c.enter(); return nil }
func (c *countingComm) DownloadDir(string, string, []string) error        { c.enter(); return nil }

func TestSerializedOpensOneSessionAtATime(t *testing.T) {
	inner := &countingComm{}
	c := Serialized(inner)
	if Serialized(c) != c {
		t.Error("wrapping twice adds a second lock")
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch i % 3 {
			case 0:
				c.Start(context.Background(), &packersdk.RemoteCmd{Command: "true"})
			case 1:
				c.Upload("/tmp/x", nil, nil)
			default:
				c.Download("/tmp/x", io.Discard)
			}
		}()
	}
	wg.Wait()
	if m := inner.most.Load(); m != 1 {
		t.Errorf("%d calls were inside the communicator at once, want 1", m)
	}
}
