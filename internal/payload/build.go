package payload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// logLines is how many of the remote output's last lines an error carries.
const logLines = 30

// ensureNix installs Nix on the host when it is missing.
func (r *run) ensureNix(ctx context.Context) error {
	defer r.timer.track(PhaseInstallNix)()
	r.ui.Say("Checking for Nix on the host (installing Debian's nix-bin when it is missing)")
	r.log.section("build.sh ensure-nix")
	tail := newLogTail(r.ui, "host: ", logLines).into(r.log, newSummary(r.cfg.FullOutput))
	st, err := remotecmd.Run(ctx, r.comm, ensureNixCommand(r.cfg), tail.Writer(0), tail.Writer(1))
	tail.Flush()
	if err != nil {
		return phaseErr(PhaseInstallNix, err, tail.Tail())
	}
	if st == 5 {
		return phaseErr(PhaseInstallNix, errors.New("the host cannot build the aarch64-linux image (its architecture is in the host's message above); run the build on an AArch64 host, nothing was installed"), tail.Tail())
	}
	if st != 0 {
		return phaseErr(PhaseInstallNix, fmt.Errorf("Nix could not be made available on the host (exit status %d). Use a Debian 13 AMI or a host with Nix preinstalled", st), tail.Tail())
	}
	return nil
}

// build runs the Nix build on the host through build.sh, showing its output.
func (r *run) build(ctx context.Context) error {
	defer r.timer.track(PhaseBuild)()
	cfg := r.cfg
	// The host stops the build at build_timeout; this deadline is a backstop
	// for a host that stopped answering.
	buildCtx, cancel := context.WithTimeout(ctx, cfg.BuildTimeoutDuration()+5*time.Minute)
	defer cancel()
	if cfg.Flake != "" {
		if log, err := r.checkFlakePlatform(buildCtx); err != nil {
			if buildCtx.Err() != nil {
				r.stopBuild(ctx)
			}
			return phaseErr(PhaseBuild, err, log)
		}
	}
	r.ui.Say(fmt.Sprintf("Building the NixOS SD image (timeout %s): %s", cfg.BuildTimeoutDuration(), buildCommand(cfg)))
	r.log.section("build.sh build: " + buildCommand(cfg))
	tail := newLogTail(r.ui, "nix: ", logLines).into(r.log, newSummary(cfg.FullOutput))
	stdout := tail.Writer(0)
	if r.cache != nil {
		stdout = io.MultiWriter(stdout, r.cache)
	}
	st, err := remotecmd.Run(buildCtx, r.comm, remoteBuildCommand(cfg), stdout, tail.Writer(1))
	tail.Flush()
	if err != nil {
		if buildCtx.Err() != nil {
			r.stopBuild(ctx)
			if ctx.Err() == nil {
				err = fmt.Errorf("the build did not finish within build_timeout (%s) and the host did not stop it; raise build_timeout", cfg.BuildTimeoutDuration())
			}
		}
		return phaseErr(PhaseBuild, err, tail.Tail())
	}
	switch st {
	case 0:
		return nil
	case 124:
		return phaseErr(PhaseBuild, fmt.Errorf("the build ran longer than build_timeout (%s) and was stopped; raise build_timeout or use a larger instance", cfg.BuildTimeoutDuration()), tail.Tail())
	case 3:
		return phaseErr(PhaseInstallNix, errors.New("Nix is not installed on the host"), tail.Tail())
	case 4:
		return phaseErr(PhaseBuild, errors.New("Nix needs root on this host and passwordless sudo is not available; allow it or run a nix-daemon"), tail.Tail())
	default:
		return phaseErr(PhaseBuild, fmt.Errorf("nix build exited with status %d; see the errors above and the last lines of its output below", st), tail.Tail())
	}
}

// stopBuild asks build.sh on the host to stop the build, after ctx ended.
func (r *run) stopBuild(ctx context.Context) {
	r.ui.Say("Stopping the remote build")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := remotecmd.Output(ctx, r.comm, stopCommand(r.cfg)); err != nil {
		r.ui.Error(fmt.Sprintf("nixos-sd: could not stop the remote build: %v", err))
	}
}
