package debianami

import (
	"strings"
	"testing"
)

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Release
	}{
		{"", DefaultRelease},
		{"  ", DefaultRelease},
		{"trixie", Release{13, "trixie"}},
		{"TRIXIE", Release{13, "trixie"}},
		{" Bookworm ", Release{12, "bookworm"}},
		{"12", Release{12, "bookworm"}},
		{"13", Release{13, "trixie"}},
		{"10", Release{10, "buster"}},
		{"bullseye", Release{11, "bullseye"}},
		{"14", Release{14, "forky"}},
	} {
		got, err := ParseRelease(tc.in)
		if err != nil {
			t.Errorf("ParseRelease(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseRelease(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseReleaseRejectsUnknown(t *testing.T) {
	for _, in := range []string{"9", "stretch", "sid", "13.1", "debian-13", "-1", "0", "trixie13"} {
		_, err := ParseRelease(in)
		if err == nil {
			t.Errorf("ParseRelease(%q) accepted an unknown release", in)
			continue
		}
		msg := err.Error()
		// The message names what was given and every valid choice.
		if !strings.Contains(msg, in) {
			t.Errorf("ParseRelease(%q): message does not name the input: %s", in, msg)
		}
		for _, r := range Releases {
			if !strings.Contains(msg, r.Codename) {
				t.Errorf("ParseRelease(%q): message does not list %s: %s", in, r.Codename, msg)
			}
		}
		if !strings.Contains(msg, `"bookworm" (12)`) {
			t.Errorf("ParseRelease(%q): message does not pair codenames with numbers: %s", in, msg)
		}
	}
}

func TestDefaultReleaseIsKnown(t *testing.T) {
	got, err := ParseRelease(DefaultRelease.Codename)
	if err != nil || got != DefaultRelease {
		t.Fatalf("DefaultRelease %v is not in Releases: %v %v", DefaultRelease, got, err)
	}
}

func TestParseArchitecture(t *testing.T) {
	for _, tc := range []struct {
		in, want, ec2 string
	}{
		{"", "arm64", "arm64"},
		{"arm64", "arm64", "arm64"},
		{"ARM64", "arm64", "arm64"},
		{"aarch64", "arm64", "arm64"},
		{"amd64", "amd64", "x86_64"},
		{" x86_64 ", "amd64", "x86_64"},
	} {
		got, err := ParseArchitecture(tc.in)
		if err != nil {
			t.Errorf("ParseArchitecture(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseArchitecture(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if e := EC2Architecture(got); e != tc.ec2 {
			t.Errorf("EC2Architecture(%q) = %q, want %q", got, e, tc.ec2)
		}
	}
	for _, in := range []string{"i386", "armhf", "arm", "riscv64", "x86-64"} {
		_, err := ParseArchitecture(in)
		if err == nil {
			t.Errorf("ParseArchitecture(%q) accepted it", in)
			continue
		}
		if !strings.Contains(err.Error(), in) || !strings.Contains(err.Error(), `"arm64" or "amd64"`) {
			t.Errorf("ParseArchitecture(%q): message should name the input and the choices: %v", in, err)
		}
	}
}

func TestNamePattern(t *testing.T) {
	if got := NamePattern(Release{12, "bookworm"}, "amd64"); got != "debian-12-amd64-*" {
		t.Errorf("NamePattern = %q", got)
	}
}
