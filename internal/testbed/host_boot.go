package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// What a fresh Debian cloud instance is like that the plugin must cope with,
// beyond the Debian root itself:
//
//   - /tmp is a tmpfs (Debian 13 mounts one of half the RAM): here a small
//     one, hostTmpMiB, smaller than the stand-in build's scratch, so a build
//     that works in /tmp runs out of space as a kernel build does on an
//     instance.
//   - For the first seconds after boot unattended-upgrades holds dpkg's
//     locks: here the test bed holds them for dpkgLockHold (every test build
//     pays it, so it is short).
//   - apt runs with APT::Install-Recommends "0", so that whoever installs
//     Nix must name every package it needs.
const (
	hostTmpMiB   = 32
	dpkgLockHold = 4 * time.Second
)

// hostAptConf is the apt configuration the hosts add to the Debian root's.
const hostAptConf = `// nixos-sd test bed: recommended packages are not installed; name what you need.
APT::Install-Recommends "0";
`

// mountTmp mounts the host's /tmp: a tmpfs of hostTmpMiB at tmpfs/, whose
// tmp/ folder tmp links to (so that the mount's root is not "/", and tests
// find the host's /tmp at Dir/tmp).
func (h *Host) mountTmp() error {
	mnt := filepath.Join(h.Dir, "tmpfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%dm,mode=0755", hostTmpMiB)); err != nil {
		return fmt.Errorf("mounting the host's /tmp (a tmpfs at %s): %w", mnt, err)
	}
	h.tmpfs = mnt
	tmp := filepath.Join(mnt, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		return err
	}
	return os.Symlink(filepath.Join("tmpfs", "tmp"), filepath.Join(h.Dir, "tmp"))
}

// unmountTmp unmounts the host's /tmp, if it is mounted.
func (h *Host) unmountTmp() error {
	if h.tmpfs == "" {
		return nil
	}
	if err := syscall.Unmount(h.tmpfs, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL {
		return fmt.Errorf("unmounting the host's /tmp at %s: %w", h.tmpfs, err)
	}
	h.tmpfs = ""
	return nil
}

// holdDpkgLock takes dpkg's locks in the running host, as apt does (fcntl
// write locks on lock-frontend, then lock), and releases them after d.
func (h *Host) holdDpkgLock(d time.Duration) error {
	root := fmt.Sprintf("/proc/%d/root", h.cmd.Process.Pid)
	var files []*os.File
	release := func() {
		for _, f := range files {
			_ = f.Close() // closing releases the process's fcntl locks
		}
	}
	for _, name := range []string{"lock-frontend", "lock"} {
		f, err := os.OpenFile(filepath.Join(root, "var/lib/dpkg", name), os.O_RDWR|os.O_CREATE, 0o640)
		if err != nil {
			release()
			return fmt.Errorf("taking dpkg's %s: %w", name, err)
		}
		files = append(files, f)
		lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
		if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
			release()
			return fmt.Errorf("taking dpkg's %s: %w", name, err)
		}
	}
	time.AfterFunc(d, release)
	return nil
}

// preinstallNix installs Debian's Nix on the host as root (for
// StandInOptions.Arch "x86_64-binfmt": a host whose Nix was set up to build
// aarch64-linux through binfmt, as nobody gets from the plugin itself).
func (h *Host) preinstallNix(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(h.cmd.Process.Pid), "-n", "-m", "-r", "-w",
		"/bin/sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=60 nix-bin nix-setup-systemd")
	cmd.Env = []string{"PATH=" + cloudInitPath, "LANG=C.UTF-8", "HOME=/root"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("installing Nix on the x86_64-binfmt host: %w\n%s", err, out)
	}
	return nil
}
