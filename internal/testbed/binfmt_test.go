package testbed

import (
	"strings"
	"testing"
)

func TestParseBinfmtEntry(t *testing.T) {
	// As /proc/sys/fs/binfmt_misc/qemu-aarch64 reads after the test bed's line.
	e := parseBinfmtEntry("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c46\nmask ffffffff\n")
	if !e.Enabled || e.Interpreter != "/usr/libexec/qemu-binfmt/aarch64-binfmt-P" || e.Flags != "POCF" {
		t.Fatalf("parsed %+v", e)
	}
	if err := e.check(); err != nil {
		t.Errorf("the test bed's entry: %v", err)
	}
	for text, says := range map[string]string{
		"disabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\n": "is disabled",
		"enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: \n":            "without F",
		"enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: PC\n":          "without F",
		// Debian's own entry (bookworm's binfmt-support or systemd-binfmt).
		"enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n": "without C",
	} {
		err := parseBinfmtEntry(text).check()
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: %v, want an error saying %q", text, err, says)
		}
	}
}

func TestWithCredentials(t *testing.T) {
	const debian = `:qemu-aarch64:M::\x7f\x45\x4c\x46\x02:\xff\xff\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF`
	if got := withCredentials(debian); got != debian+"C" {
		t.Errorf("withCredentials(Debian's line) = %q", got)
	}
	if got := withCredentials(debian + "C"); got != debian+"C" {
		t.Errorf("withCredentials added C twice: %q", got)
	}
}

func TestRootEmulatorRefuses(t *testing.T) {
	for _, c := range []struct {
		opts HostPoolOptions
		says string
	}{
		{HostPoolOptions{DebianArch: "armhf"}, `DebianArch must be empty (this machine's) or "arm64", got "armhf"`},
		{HostPoolOptions{DebianArch: "arm64", StandIn: StandInOptions{Arch: "x86_64"}}, "are aarch64 by emulation"},
	} {
		if _, err := rootEmulator(c.opts); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%+v: %v, want an error saying %q", c.opts, err, c.says)
		}
	}
	if e, err := rootEmulator(HostPoolOptions{}); e != "" || err != nil {
		t.Errorf("this machine's root: %q, %v", e, err)
	}
}

func TestArm64RootLayout(t *testing.T) {
	if got := debianRootDir("trixie", "arm64"); got != "debian-trixie-arm64" {
		t.Errorf("the arm64 root's folder: %s", got)
	}
	if got := debianRootDir("bookworm", ""); got != "debian-bookworm" {
		t.Errorf("this machine's root's folder: %s", got)
	}
	if got := (StandInOptions{}).realConf(); got != "IMAGE_MIB=64\nCOMPRESS=1\nARCH=real\n" {
		t.Errorf("an arm64 host's standin.conf: %q", got)
	}
}
