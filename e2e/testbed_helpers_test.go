//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// testbedStartTimeout bounds starting the test bed (moto takes a few seconds).
const testbedStartTimeout = 3 * time.Minute

// leakOptOuts holds the tests that leave EC2 resources on purpose.
var leakOptOuts sync.Map // *testing.T -> reason string

// allowLeaks tells startTestbed's end-of-test leak check to skip t: for a test
// that leaves resources on purpose (it should check them itself with
// tb.Leaks). reason is logged. It may be called before or after
// startTestbed: the leak check itself forgets the opt-out once it has read it
// (a cleanup here would run before the leak check when registered after it).
func allowLeaks(t *testing.T, reason string) {
	t.Helper()
	leakOptOuts.Store(t, reason)
	t.Logf("leak check off for this test: %s", reason)
}

// syncLog collects the test bed's progress lines, shown only when the test fails.
type syncLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	start time.Time
}

func (l *syncLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.buf, "%7.2fs ", time.Since(l.start).Seconds())
	fmt.Fprintf(&l.buf, format, args...)
	if !strings.HasSuffix(format, "\n") {
		l.buf.WriteByte('\n')
	}
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startTestbed starts a test bed for t and registers, in this order at the
// end of the test: the leak check (the test fails listing every EC2 resource
// left in moto, unless allowLeaks(t, ...) was called), the dump of the test
// bed's logs (its progress lines, moto's log, the EC2 calls, the watcher's
// errors, the running hosts) when the test failed, and Close. opts.WorkDir
// defaults to a folder of t.TempDir(); opts.Logf to a buffer that is logged
// only on failure. A test bed that does not start fails the test at once.
func startTestbed(t testing.TB, opts testbed.Options) *testbed.Testbed {
	t.Helper()
	if opts.WorkDir == "" {
		opts.WorkDir = t.TempDir()
	}
	var progress *syncLog
	if opts.Logf == nil {
		progress = &syncLog{start: time.Now()}
		opts.Logf = progress.logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), testbedStartTimeout)
	defer cancel()
	tb, err := testbed.Start(ctx, opts)
	if err != nil {
		if progress != nil {
			t.Logf("test bed progress:\n%s", progress)
		}
		t.Fatalf("starting the test bed: %v", err)
	}
	t.Cleanup(func() {
		recordCalls(t.Name(), tb)
		if reason, ok := leakOptOuts.LoadAndDelete(t); ok {
			t.Logf("leak check skipped: %s", reason)
		} else {
			checkNoLeaks(t, tb)
		}
		if t.Failed() {
			if progress != nil {
				t.Logf("test bed progress:\n%s", progress)
			}
			var b bytes.Buffer
			tb.DumpLogs(&b)
			t.Logf("test bed logs:\n%s", b.String())
		}
		if err := tb.Close(); err != nil {
			t.Errorf("closing the test bed: %v", err)
		}
	})
	return tb
}

// checkNoLeaks fails t listing every resource the test left in moto.
func checkNoLeaks(t testing.TB, tb *testbed.Testbed) {
	t.Helper()
	if problem := leakProblem(tb); problem != "" {
		t.Error(problem)
	}
}

// leakProblem describes what the test left in moto, or is empty when nothing.
func leakProblem(tb *testbed.Testbed) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leaks, err := tb.Leaks(ctx)
	var problems []string
	if err != nil {
		problems = append(problems, fmt.Sprintf("leak check: listing what is left in EC2 failed: %v", err))
	}
	if len(leaks) > 0 {
		problems = append(problems, fmt.Sprintf("leak check: the test left %d resource(s) in EC2 (a build must leave nothing behind):\n  %s",
			len(leaks), strings.Join(leaks, "\n  ")))
	}
	return strings.Join(problems, "\n")
}
