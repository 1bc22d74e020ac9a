package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Stop ends host id: its delay proxy, every process in its namespace (sshd,
// sessions, builds), the namespace and veth pair, and its folder (unless
// KeepDirs). The stand-ins' records stay readable through the Host, and
// through Stopped(id). Stopping a host that is already stopped does nothing.
func (p *HostPool) Stop(id string) error {
	p.mu.Lock()
	h, ok := p.hosts[id]
	if !ok {
		_, wasStopped := p.stopped[id]
		p.mu.Unlock()
		if wasStopped {
			return nil
		}
		return fmt.Errorf("testbed: no host %s is running", id)
	}
	delete(p.hosts, id)
	p.stopped[id] = h
	p.mu.Unlock()
	return p.stopHost(h)
}

func (p *HostPool) stopHost(h *Host) error {
	if h.slot.proxy != nil {
		h.slot.proxy.Hold()
		_ = h.slot.proxy.Close()
	}
	err := h.teardown()
	if err == nil {
		// The interfaces are gone: the /30 may be used again.
		releaseSubnet(h.slot.subnet)
	}
	// Keep the records before the folder goes.
	shutdown, err1 := readLines(filepath.Join(h.Dir, "state", "shutdown.log"))
	standin, err2 := readLines(filepath.Join(h.Dir, "state", "standin-calls.log"))
	machine, err3 := readLines(filepath.Join(h.Dir, "state", "standin-machine.log"))
	inputs, err4 := readLines(filepath.Join(h.Dir, "state", "standin-flake-inputs.log"))
	h.mu.Lock()
	h.stopped = true
	if err1 == nil {
		h.shutdown = shutdown
	}
	if err2 == nil {
		h.standin = standin
	}
	if err3 == nil {
		h.machine = machine
	}
	if err4 == nil {
		h.inputs = inputs
	}
	h.mu.Unlock()
	if !p.opts.KeepDirs {
		if rmErr := os.RemoveAll(h.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("testbed: removing %s: %w", h.Dir, rmErr))
		}
	}
	p.logf("testbed: host %s stopped", h.ID)
	if err != nil {
		return fmt.Errorf("testbed: stopping host %s: %w", h.ID, err)
	}
	return nil
}

// teardown kills everything in the namespace and deletes it.
func (h *Host) teardown() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	var errs []error
	if h.cmd != nil && h.cmd.Process != nil {
		_ = h.cmd.Process.Signal(syscall.SIGTERM)
	}
	if h.net != nil {
		if err := h.net.killAll(ctx, 2*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if h.cmd != nil {
		select {
		case <-h.exited:
		case <-time.After(3 * time.Second):
			_ = h.cmd.Process.Kill()
			select {
			case <-h.exited:
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("sshd (pid %d) does not exit", h.cmd.Process.Pid))
			}
		}
	}
	if h.logFile != nil {
		_ = h.logFile.Close()
	}
	if err := h.removeRule(ctx); err != nil {
		errs = append(errs, err)
	}
	if h.net != nil {
		if err := h.net.delete(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := h.unmountTmp(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// Close stops every host and the pending delay proxy, and removes the
// hosts' folder when the pool made it.
func (p *HostPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	hosts := make([]*Host, 0, len(p.hosts))
	for id, h := range p.hosts {
		hosts = append(hosts, h)
		p.stopped[id] = h
	}
	p.hosts = map[string]*Host{}
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()

	var errs []error
	if pending != nil {
		pending.release()
	}
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.stopHost(h); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	if p.ownWorkDir && !p.opts.KeepDirs {
		if err := os.RemoveAll(p.workDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
