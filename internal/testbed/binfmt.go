package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// A host whose Debian root is of another architecture than this machine's
// (HostPoolOptions.DebianArch "arm64") runs the root's programs, sshd
// first, through the kernel's binfmt_misc and Debian's qemu-user-static:
// real emulation, where the stand-in uname and Nix settings of the other
// hosts only pretend.
const (
	binfmtDir = "/proc/sys/fs/binfmt_misc"
	// binfmtConf is qemu-user-static's entry as Debian ships it for
	// systemd-binfmt; its flags are OPF (bookworm), the test bed's add C.
	binfmtConf = "/usr/lib/binfmt.d/qemu-aarch64.conf"
	binfmtName = "qemu-aarch64"
)

// binfmtEntry is what /proc/sys/fs/binfmt_misc/NAME says of an entry.
type binfmtEntry struct {
	Enabled     bool
	Interpreter string
	Flags       string
}

// parseBinfmtEntry reads an entry's file ("enabled", "interpreter PATH",
// "flags: OPF", ...).
func parseBinfmtEntry(text string) binfmtEntry {
	var e binfmtEntry
	for _, line := range strings.Split(text, "\n") {
		switch {
		case line == "enabled":
			e.Enabled = true
		case strings.HasPrefix(line, "interpreter "):
			e.Interpreter = strings.TrimPrefix(line, "interpreter ")
		case strings.HasPrefix(line, "flags:"):
			e.Flags = strings.TrimSpace(strings.TrimPrefix(line, "flags:"))
		}
	}
	return e
}

// check says what keeps the entry from running a host's programs.
func (e binfmtEntry) check() error {
	switch {
	case !e.Enabled:
		return fmt.Errorf("the entry %s/%s is disabled; enable it: echo 1 >%s/%s", binfmtDir, binfmtName, binfmtDir, binfmtName)
	case !strings.Contains(e.Flags, "F"):
		return fmt.Errorf("the entry %s/%s has flags %q, without F (fix binary): the kernel would look for its interpreter %s inside the hosts' roots; "+
			"run scripts/testbed-deps.sh, which registers Debian's entry with flags F and C", binfmtDir, binfmtName, e.Flags, e.Interpreter)
	case !strings.Contains(e.Flags, "C"):
		return fmt.Errorf("the entry %s/%s has flags %q, without C (credentials): sudo and every setuid program on the hosts would run without their owner's rights; "+
			"run scripts/testbed-deps.sh, which registers Debian's entry with flags F and C", binfmtDir, binfmtName, e.Flags)
	}
	return nil
}

// rootEmulator checks opts.DebianArch and returns the binfmt_misc
// interpreter that runs the root's programs: empty for this machine's own.
func rootEmulator(opts HostPoolOptions) (string, error) {
	switch opts.DebianArch {
	case "":
		return "", nil
	case "arm64":
		if opts.StandIn.Arch != "" {
			return "", fmt.Errorf("testbed: StandInOptions.Arch %q makes this machine's root play a machine; an arm64 root's hosts are aarch64 by emulation (leave it empty)", opts.StandIn.Arch)
		}
		return ensureBinfmt()
	}
	return "", fmt.Errorf("testbed: HostPoolOptions.DebianArch must be empty (this machine's) or \"arm64\", got %q", opts.DebianArch)
}

// ensureBinfmt makes sure this machine runs aarch64 programs through
// qemu-user-static: it registers Debian's entry with the C flag added (as
// scripts/testbed-deps.sh does) when none is there, and returns the entry's
// interpreter. C makes the kernel give a setuid program its owner's rights,
// as on a real machine (sudo needs it); Debian leaves it out.
func ensureBinfmt() (string, error) {
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("testbed: the arm64 hosts run Debian's arm64 programs through binfmt_misc and qemu-user-static, and binfmt cannot be registered here: %w", err)
	}
	entry := filepath.Join(binfmtDir, binfmtName)
	if _, err := os.Stat(entry); err != nil {
		line, err := binfmtLine()
		if err != nil {
			return fail(err)
		}
		if _, err := os.Stat(filepath.Join(binfmtDir, "register")); err != nil {
			if err := syscall.Mount("binfmt_misc", binfmtDir, "binfmt_misc", 0, ""); err != nil {
				return fail(fmt.Errorf("mounting binfmt_misc on %s: %w", binfmtDir, err))
			}
		}
		if err := os.WriteFile(filepath.Join(binfmtDir, "register"), []byte(line+"\n"), 0o200); err != nil {
			return fail(fmt.Errorf("registering %s's entry: %w", binfmtConf, err))
		}
	}
	data, err := os.ReadFile(entry)
	if err != nil {
		return fail(err)
	}
	e := parseBinfmtEntry(string(data))
	if err := e.check(); err != nil {
		return fail(err)
	}
	if _, err := os.Stat(e.Interpreter); err != nil {
		return fail(fmt.Errorf("the entry's interpreter: %w; install qemu-user-static (scripts/testbed-deps.sh)", err))
	}
	return e.Interpreter, nil
}

// binfmtLine is qemu-user-static's registration line with the C flag.
func binfmtLine() (string, error) {
	data, err := os.ReadFile(binfmtConf)
	if err != nil {
		return "", fmt.Errorf("%w; install qemu-user-static (scripts/testbed-deps.sh)", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, ":"+binfmtName+":") {
			return withCredentials(line), nil
		}
	}
	return "", fmt.Errorf("%s has no %s entry", binfmtConf, binfmtName)
}

// withCredentials adds C to a registration line's flags (its last field).
func withCredentials(line string) string {
	i := strings.LastIndex(line, ":")
	if strings.Contains(line[i+1:], "C") {
		return line
	}
	return line + "C"
}

// checkEmulated verifies that the host's sshd runs through interpreter: the
// kernel names the program it started for a binfmt_misc entry in
// /proc/PID/exe.
func (h *Host) checkEmulated(interpreter string) error {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", h.cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("reading sshd's program: %w", err)
	}
	want, err := filepath.EvalSymlinks(interpreter)
	if err != nil {
		return err
	}
	if exe != want && exe != interpreter {
		return fmt.Errorf("sshd runs as %s, not through the binfmt_misc interpreter %s", exe, interpreter)
	}
	h.Emulator = exe
	return nil
}
