package builder

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// watchdog is the dead man's switch on the instance (see doc.go): Packer
// touches the heartbeat file every timeout/5; a root process on the instance
// checks it every timeout/10 and powers the instance off when it is older
// than timeout.
type watchdog struct {
	timeout time.Duration
	// sudo prefixes the root command ("sudo -n " on an instance).
	sudo string
	// tmp is where the heartbeat's private directory is made ("" = the
	// host's $TMPDIR, else /tmp); file is the heartbeat file armCommand
	// made; shutdown the command that stops the host.
	tmp, file, shutdown string
}

func newWatchdog(timeout time.Duration) watchdog {
	return watchdog{timeout: timeout, sudo: "sudo -n ", shutdown: "shutdown -P now"}
}

func (w watchdog) interval() time.Duration { return max(w.timeout/5, time.Second) }

// armCommand creates the heartbeat file as the SSH user (so later touches need
// no sudo) in a new directory of its own (mktemp -d: mode 0700, a path
// nobody can prepare or touch), starts the root watchdog detached from the
// SSH session, and prints the file's path.
func (w watchdog) armCommand() string {
	check := max(int(w.timeout.Seconds())/10, 1)
	loop := fmt.Sprintf(`hb=$1; while sleep %d; do `+
		`last=$(stat -c %%Y "$hb" 2>/dev/null || echo 0); `+
		`if [ $(( $(date +%%s) - last )) -ge %d ]; then `+
		`echo "nixos-sd watchdog: no heartbeat from Packer for %s; shutting down" >&2; %s; exit 0; fi; done`,
		check, int(w.timeout.Seconds()), w.timeout, w.shutdown)
	root := fmt.Sprintf(`nohup setsid sh -c %s nixos-sd-watchdog "$1" >/dev/null 2>&1 </dev/null &`, remotecmd.Quote(loop))
	parent := `"${TMPDIR:-/tmp}"`
	if w.tmp != "" {
		parent = remotecmd.Quote(w.tmp)
	}
	return fmt.Sprintf(`d=$(mktemp -d %s/nixos-sd-watchdog.XXXXXXXXXX) && hb="$d/heartbeat" && touch "$hb" && %ssh -c %s sh "$hb" && printf '%%s\n' "$hb"`,
		parent, w.sudo, remotecmd.Quote(root))
}

func (w watchdog) beatCommand() string { return "touch " + remotecmd.Quote(w.file) }

// stepWatchdog arms the watchdog once SSH is up and keeps the heartbeat going
// until cleanup.
type stepWatchdog struct {
	wd     watchdog
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func (s *stepWatchdog) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phaseBoot)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	comm, ok := state.Get("communicator").(packersdk.Communicator)
	if !ok || comm == nil {
		return halt(state, fmt.Errorf("internal error: no communicator in the build state"))
	}
	if s.wd.timeout == 0 {
		s.wd = newWatchdog(e.cfg.OrphanTimeoutDuration())
	}
	e.ui.Say(fmt.Sprintf("Arming the instance's watchdog: it terminates itself %s after it last hears from Packer", s.wd.timeout))
	out, err := remotecmd.Output(ctx, comm, s.wd.armCommand())
	if err != nil {
		return halt(state, fmt.Errorf("arming the instance's watchdog (needs passwordless sudo for %s): %w; use an AMI whose ssh_username has passwordless sudo", e.cfg.Comm.SSHUsername, err))
	}
	if s.wd.file = strings.TrimSpace(string(out)); !strings.HasPrefix(s.wd.file, "/") || strings.ContainsAny(s.wd.file, "\n'") {
		return halt(state, fmt.Errorf("arming the instance's watchdog: mktemp -d answered %q, not an absolute path; use an AMI with coreutils' mktemp and a writable $TMPDIR or /tmp", s.wd.file))
	}
	// The heartbeat outlives this step's ctx: it must go on through the build,
	// -debug pauses and -on-error=ask prompts, until Cleanup.
	beatCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(s.wd.interval())
		defer t.Stop()
		failures := 0
		for {
			select {
			case <-beatCtx.Done():
				return
			case <-t.C:
			}
			callCtx, stop := context.WithTimeout(beatCtx, s.wd.interval())
			_, err := remotecmd.Output(callCtx, comm, s.wd.beatCommand())
			stop()
			if err != nil && beatCtx.Err() == nil {
				failures++
				if failures == 3 {
					e.ui.Error(fmt.Sprintf("Could not reach the instance for its heartbeat (%s); it will terminate itself %s after the last one", strings.TrimSpace(err.Error()), s.wd.timeout))
				}
			} else {
				failures = 0
			}
		}
	}()
	return multistep.ActionContinue
}

func (s *stepWatchdog) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
	if s.cancel != nil {
		s.cancel()
		s.done.Wait()
	}
}
